"""Settings of ``resnets serve``: one dataclass, filled from the command line."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from ..export.backends import AUTO, BACKENDS, CALIBRATED, INT8
from ..export.sr import SR_BACKENDS

BATCH_WAIT_MODES = ("adaptive", "fixed")
MAX_BATCH_WAIT_MS = 60_000  # a batching window of a minute is already far past any use


@dataclass
class ServeConfig:
    """What ``resnets serve`` loads and the limits it enforces.

    The defaults keep one x4 upscale far below a few GB: the output is at most
    ``max_output_pixels`` (float32 accumulators of 3 + 1 planes: 16 MP -> 256 MB) and it is
    computed in tiles (``resnets.tasks.upscale``).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None  # classifier name; default: the bundled ResNet-56
    weights: str | None = None  # classifier safetensors file
    sr_model: str | None = None  # super-resolution model; default: the best bundled one
    sr_weights: str | None = None
    backend: str = AUTO  # classifier backend, as predict's --backend
    calibration: str | None = None  # image folder, for the int8 backends
    sr_backend: str = "auto"  # upscaler backend (resnets.export.sr), as upscale's --backend
    device: str = "cpu"
    workers: int = 1  # processes (each loads its own models; stateless)
    queue_size: int = 64  # requests waiting per model before 503
    max_batch: int = 32  # images per classifier batch
    # how long a batch waits for more requests. 0: a batch is whatever queued while the last
    # one ran; measured faster at 1, 4 and 16 clients with the default backend (BENCHMARKS.md)
    batch_wait_ms: float = 0.0
    # "adaptive": the wait also ends once the batch is as large as the last one; "fixed":
    # always the whole batch_wait_ms (or max_batch requests)
    batch_wait_mode: str = "adaptive"
    max_upload_mb: float = 20.0
    max_pixels: int = 40_000_000  # decoded input pixels (width x height)
    max_output_pixels: int = 16_777_216  # upscaled output pixels (4096 x 4096)
    tile: int = 256  # low-resolution tile side for upscaling
    # on SIGTERM, how long the requests in flight may take before they are cancelled: a
    # client that sends half a body and stalls would otherwise hold the shutdown for ever
    shutdown_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        checks = [("port", 0 <= self.port <= 65535, "0..65535"),
                  ("workers", self.workers >= 1, ">= 1"),
                  ("queue_size", self.queue_size >= 1, ">= 1"),
                  ("max_batch", self.max_batch >= 1, ">= 1"),
                  # finite: an endless wait killed the classify worker (a thread cannot
                  # wait past threading.TIMEOUT_MAX), and int(inf) failed every upload
                  ("batch_wait_ms", 0 <= self.batch_wait_ms <= MAX_BATCH_WAIT_MS,
                   f"0..{MAX_BATCH_WAIT_MS}"),
                  ("max_upload_mb", 0 < self.max_upload_mb < math.inf, "> 0 and finite"),
                  ("max_pixels", self.max_pixels >= 1, ">= 1"),
                  ("max_output_pixels", self.max_output_pixels >= 1, ">= 1"),
                  ("tile", self.tile >= 32, ">= 32"),
                  ("shutdown_timeout_s", 0 < self.shutdown_timeout_s < math.inf,
                   "> 0 and finite")]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)}")
        backends = (AUTO, INT8, "eager", *BACKENDS)
        if self.backend not in backends:
            raise ValueError(f"backend must be one of {', '.join(backends)}, got "
                             f"{self.backend!r}")
        if self.calibration is None and self.backend in (INT8, *CALIBRATED):
            raise ValueError(f"backend {self.backend} needs calibration images: calibration "
                             "must be a folder of a few hundred training images")
        if self.batch_wait_mode not in BATCH_WAIT_MODES:
            raise ValueError(f"batch_wait_mode must be one of {', '.join(BATCH_WAIT_MODES)}, "
                             f"got {self.batch_wait_mode!r}")
        sr_backends = ("auto", "eager", *SR_BACKENDS)
        if self.sr_backend not in sr_backends:
            raise ValueError(f"sr_backend must be one of {', '.join(sr_backends)}, got "
                             f"{self.sr_backend!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))
