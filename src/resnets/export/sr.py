"""Super-resolution models through the inference backends: one graph per scale.

A multi-scale network takes the scale as a Python argument and runs a different upsampler
for each, so every runtime gets one graph per scale (:class:`~resnets.export.graphs.AtScale`,
height and width free), made through :func:`~resnets.export.backends.load_backend` the first
time a scale is asked for and kept. Under export the model's bicubic base becomes
:func:`~resnets.models.imresize.upscale_by_convolution` (float32); eager PyTorch keeps the
float64 one.

- ``torch``: eager fp32, the reference.
- ``bf16``: eager under ``torch.autocast`` (bfloat16): the convolutions run in bf16, the
  bicubic base stays float64 (autocast leaves float64 alone), so only the learned residual
  is rounded. Not exact: its PSNR against fp32 is measured, not assumed (BENCHMARKS.md),
  and ``auto`` does not pick it.
- ``onnxruntime``, ``openvino``: fp32 graphs checked against PyTorch when made, and cached on
  disk per scale (:mod:`resnets.export.model_cache`; the scale is in the graph's key), so a
  second run neither exports nor converts again.

:class:`SRBackend` is called like the model (``backend(x, scale)``), so tiling, the
self-ensemble and the benchmark evaluation take it in the model's place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..models.sr import SUPPORTED_SCALES
from .backends import AUTO, installed, load_backend
from .graphs import AtScale

SR_BACKENDS = ("torch", "bf16", "onnxruntime", "openvino")
_ALIASES = {"eager": "torch"}
# What ``auto`` picks on the CPU, fastest first, with what each needs installed: the fp32
# runtimes, within 0.0001 dB of fp32 eager on Set5 at x2/x3/x4 for any network (float32
# rounding; tests/export/test_sr.py). Issue #18's run (edsr_small_x234, 12 MP output, 2
# threads; BENCHMARKS.md): OpenVINO 1.74x / 1.19x eager at x2 / x4, onnxruntime 1.67x /
# 1.19x. Both cache their graphs: `upscale --backend onnxruntime` of one Set5 image (256x256
# x2, 2 cores, trainers paused) took 7.5 s with an empty cache and 2.2-2.3 s after. bf16 was
# faster still (2.03x / 1.43x) and within 0.002 dB on Set5 for edsr_small, but it is left
# to be asked for: its rounding error depends on the network (more for a deeper one) and
# its speed on the CPU having bf16 instructions, so it is not exact for every model and
# machine the default meets.
EXACT_BY_SPEED = (("openvino", ("openvino",)),
                  ("onnxruntime", ("onnxruntime", "onnx", "onnxscript")),
                  ("torch", ()))
GRAPH_SIDE = 32  # the side of the sample input a graph is traced and checked with


def resolve_sr_backend(kind: str, device: str | torch.device = "cpu") -> str:
    """``kind`` with aliases and ``auto`` resolved: ``auto`` is the fastest exact backend
    installed on the CPU, PyTorch eager on an accelerator."""
    kind = _ALIASES.get(kind, kind)
    if kind != AUTO:
        if kind not in SR_BACKENDS:
            raise ValueError(f"unknown super-resolution backend {kind!r}: expected one of "
                             f"{', '.join((AUTO, 'eager') + SR_BACKENDS)}")
        return kind
    if torch.device(device).type != "cpu":
        return "torch"
    for name, needs in EXACT_BY_SPEED:
        if all(installed(m) for m in needs):
            return name
    return "torch"


class _Autocast(nn.Module):
    """``model`` under bf16 autocast on its device, float32 out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.model(x).float()


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


class SRBackend(nn.Module):
    """A super-resolution model run by ``kind``, called like the model: ``(x, scale)``."""

    def __init__(self, kind: str, model: nn.Module, threads: int | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.model = model.eval()
        self.threads = threads
        self.runners: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}
        self.details: dict[int, dict[str, Any]] = {}  # per scale: what the export checked

    @property
    def config(self) -> Any:
        return getattr(self.model, "config", None)

    @property
    def scales(self) -> tuple[int, ...] | None:
        return getattr(self.model, "scales", None)

    def runner(self, scale: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The graph for ``scale``, made on first use."""
        if scale not in self.runners:
            self.runners[scale] = self._make(scale)
        return self.runners[scale]

    def _make(self, scale: int) -> Callable[[torch.Tensor], torch.Tensor]:
        graph = AtScale(self.model, scale).eval()
        if self.kind == "torch":
            return graph
        if self.kind == "bf16":
            return _Autocast(graph)
        if _device_of(self.model).type != "cpu":
            raise ValueError(f"the {self.kind} backend runs on the CPU; got a model on "
                             f"{_device_of(self.model)}: move it to the CPU or use torch")
        chans = getattr(self.config, "in_chans", 3)
        with torch.inference_mode(False):  # exporting traces with ordinary tensors
            backend = load_backend(self.kind, graph, input_size=(chans, GRAPH_SIDE, GRAPH_SIDE),
                                   threads=self.threads)
        self.details[scale] = backend.details
        return backend

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        if scale is None:
            scales = self.scales or SUPPORTED_SCALES
            if len(scales) != 1:
                raise ValueError(f"this model serves scales {list(scales)}: pass scale=")
            scale = scales[0]
        return self.runner(scale)(x)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def load_sr_backend(kind: str, model: nn.Module, *, threads: int | None = None,
                    scales: tuple[int, ...] = ()) -> SRBackend:
    """``model`` run by ``kind`` (``auto``: :func:`resolve_sr_backend`, or eager for a model
    without parameters, the bicubic baseline); the graphs of
    ``scales`` are made now, any other when first asked for. ``threads`` pins onnxruntime's
    and OpenVINO's threads (PyTorch's are global: ``torch.set_num_threads``)."""
    if kind == AUTO and next(model.parameters(), None) is None:
        kind = "torch"  # bicubic: no network to speed up, and eager is the reference
    backend = SRBackend(resolve_sr_backend(kind, _device_of(model)), model, threads)
    for scale in scales:
        backend.runner(scale)
    return backend
