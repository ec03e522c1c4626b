"""One entry point for every way of running a model: a callable from images to logits.

``load_backend(kind, model)`` returns a function taking a float ``(N, 3, H, W)`` batch
(normalized like the model's training data) and returning float32 logits, whatever runs
underneath: PyTorch eager, :func:`~resnets.export.optimize`, onnxruntime fp32 or int8,
OpenVINO fp32 or int8. ``auto`` picks the fastest exact (fp32) backend installed and
``int8`` the fastest int8 one; ``Backend.kind`` names what was picked. With ``uint8_input``
it takes uint8 images (resized and cropped) instead and normalises them itself: OpenVINO
inside its compiled graph, the others with :meth:`resnets.weights.Preprocessing.normalize`
first. ``resnets predict --backend`` and ``resnets bench`` both use it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..models.registry import build_model, get_spec
from ..weights.classifier import load_classifier
from ..weights.preprocessing import Preprocessing
from .onnx import OrtRunner, fp32_session
from .optimize import optimize

BACKENDS = ("torch", "optimized", "compiled", "bf16", "onnxruntime", "onnxruntime-int8",
            "openvino", "openvino-int8")
CALIBRATED = ("onnxruntime-int8", "openvino-int8")
_ALIASES = {"eager": "torch"}
AUTO = "auto"
INT8 = "int8"  # the fastest int8 backend installed
# The exact (fp32) backends, fastest first, and what each needs installed. Issue #17's run
# (resnet50, 2 threads): OpenVINO fp32 2.22x torchvision eager, onnxruntime 2.11x,
# optimize() 1.59x (BENCHMARKS.md).
EXACT_BY_SPEED = (("openvino", ("openvino",)), ("onnxruntime", ("onnxruntime", "onnx")),
                  ("optimized", ()))
# The int8 backends, fastest first. Issue #17's run (2 threads): onnxruntime int8 ran at
# 0.77-0.92x OpenVINO int8 (resnet50 at batch 1 and 16, CIFAR nets at 256; BENCHMARKS.md).
# onnxruntime-int8 is the last resort: when it is missing too, its error names the extra.
INT8_BY_SPEED = (("openvino-int8", ("openvino", "nncf")),
                 ("onnxruntime-int8", ("onnxruntime", "onnx")))


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (looked up, not imported)."""
    return importlib.util.find_spec(module) is not None


def _fastest(by_speed: tuple[tuple[str, tuple[str, ...]], ...], fallback: str) -> str:
    for kind, needs in by_speed:
        if all(installed(m) for m in needs):
            return kind
    return fallback


def fastest_exact_backend() -> str:
    """The fastest fp32 backend whose runtime is installed: ``openvino``, else
    ``onnxruntime``, else ``optimized`` (PyTorch, always there)."""
    return _fastest(EXACT_BY_SPEED, "optimized")


def fastest_int8_backend() -> str:
    """The fastest int8 backend whose runtime is installed: ``openvino-int8`` (OpenVINO and
    NNCF), else ``onnxruntime-int8``."""
    return _fastest(INT8_BY_SPEED, "onnxruntime-int8")


def resolve_backend(kind: str, device: str | torch.device = "cpu") -> str:
    """``kind`` with ``auto``, ``int8`` and aliases resolved: ``auto`` is
    :func:`fastest_exact_backend` on the CPU and PyTorch eager on an accelerator; ``int8``
    is :func:`fastest_int8_backend` (the int8 backends run on the CPU)."""
    kind = _ALIASES.get(kind, kind)
    if kind == INT8:
        return fastest_int8_backend()
    if kind != AUTO:
        return kind
    return fastest_exact_backend() if torch.device(device).type == "cpu" else "torch"


Normalization = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per channel
TORCH_KINDS = ("torch", "optimized", "compiled", "bf16")  # the model runs in PyTorch


@contextmanager
def runtime_owns_cores(kind: str) -> Iterator[None]:
    """While a runtime (OpenVINO, onnxruntime) runs the model, PyTorch, left with the glue
    (stacking decoded images, softmax), runs on one thread, and gets its thread count back
    after: its OpenMP threads otherwise compete with the runtime's for the cores. Measured
    on 2 cores (issue #17): predict 12% faster with openvino-int8, 5% with openvino. A
    PyTorch ``kind`` keeps its threads."""
    if kind in TORCH_KINDS:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Backend:
    """A model behind a uniform call; ``kind`` names what runs it."""

    def __init__(self, kind: str, fn: Callable[[torch.Tensor], torch.Tensor],
                 input_size: tuple[int, int, int], details: dict | None = None,
                 input_dtype: torch.dtype = torch.float32,
                 map_fn: Callable[[Iterable[torch.Tensor]], Iterator[torch.Tensor]] | None
                 = None) -> None:
        self.kind = kind
        self.fn = fn
        self.input_size = input_size
        self.details = details or {}  # e.g. int8's agreement with fp32 on calibration images
        self.input_dtype = input_dtype  # torch.uint8: images in, normalised by the backend
        self.map_fn = map_fn  # a runtime's own pipelined map (OpenVINO's streams), if any

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.fn(x)

    def map(self, batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Outputs of ``batches``, in order: the runtime's pipelined map where it has one
        (several batches in flight), else one call after another. ``batches`` is read
        lazily, so it may be decoded while earlier batches run."""
        if self.map_fn is not None:
            yield from self.map_fn(batches)
            return
        for x in batches:
            yield self(x)

    def __repr__(self) -> str:
        return f"Backend({self.kind!r}, input_size={self.input_size})"


def _normalizing(backend: Backend, normalization: Normalization) -> Backend:
    """``backend`` taking uint8 images, normalised by :class:`Preprocessing` first."""
    mean, std = normalization
    pre = Preprocessing(resize=None, crop=None, mean=mean, std=std)
    inner = backend.fn

    def fn(images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise ValueError(f"this backend takes uint8 images (0-255, resized and cropped), "
                             f"got {str(images.dtype).removeprefix('torch.')}")
        return inner(pre.normalize(images))

    return Backend(backend.kind, fn, backend.input_size, backend.details, torch.uint8)


def _resolve_model(model: nn.Module | str, weights: str | Path | None,
                   input_size: tuple[int, int, int] | None
                   ) -> tuple[nn.Module, tuple[int, int, int], Normalization | None]:
    """The module, its input size and the normalisation its weights record (if any)."""
    recorded = None
    if isinstance(model, str):
        name = model
        if weights is None:
            model = build_model(name)
        else:
            clf = load_classifier(weights, name)
            model = clf.model
            recorded = (clf.preprocessing.mean, clf.preprocessing.std)
        if input_size is None:
            _, h, w = get_spec(name).input_size
            input_size = (getattr(model, "in_chans", 3), h, w)
    elif weights is not None:
        raise ValueError("weights are only used with a model name; load them into the module "
                         "yourself (resnets.load_classifier)")
    if input_size is None:
        raise ValueError("input_size is needed for a model module, e.g. (3, 224, 224); or pass "
                         "the model by its registry name")
    return model.eval(), input_size, recorded


def _calibration_source(kind: str, calibration: str | Path | list[Path] | torch.Tensor | None
                        ) -> Path | list[Path] | torch.Tensor:
    """The calibration tensor, folder or file list; an error when there is none."""
    if calibration is None:
        raise ValueError(f"{kind} needs calibration images: give a folder of images (or a "
                         "list of image files); a few hundred training images are enough")
    if isinstance(calibration, (str, Path)):
        return Path(calibration)
    return calibration


def load_backend(kind: str, model: nn.Module | str, *, weights: str | Path | None = None,
                 input_size: tuple[int, int, int] | None = None, threads: int | None = None,
                 calibration: str | Path | list[Path] | torch.Tensor | None = None,
                 calibration_count: int = 128,
                 normalization: Normalization | None = None,
                 uint8_input: bool = False, throughput: bool = False,
                 preprocessing: Preprocessing | None = None) -> Backend:
    """``model`` (a module, or a registry name with optional ``weights``) run by ``kind``.

    Kinds: ``auto`` and ``int8`` (:func:`resolve_backend`), ``torch`` (eager, alias
    ``eager``), ``optimized`` (BN folded, channels-last), ``compiled`` (the same through
    ``torch.compile``), ``bf16``, ``onnxruntime`` (fp32) and ``onnxruntime-int8`` (static
    quantization calibrated on ``calibration``: a folder of images, a list of image files or
    a preprocessed tensor; :func:`resnets.export.int8.int8_session`), ``openvino`` (fp32)
    and ``openvino-int8`` (NNCF, calibrated like ``onnxruntime-int8``; see
    :mod:`resnets.export.openvino`). Exported, converted and quantized models are cached
    (:mod:`resnets.export.model_cache`), so a second load neither exports nor calibrates
    again.
    Calibration images are resized and cropped as ``preprocessing`` does (the weights' own,
    e.g. resize 232 then crop 224; without it, the shorter side is resized to the input
    size) and normalized with ``normalization`` (mean, std), by default the one the weights
    record (``resnets train`` metadata, a pretrained record) or ImageNet's.
    ``threads`` pins onnxruntime's and OpenVINO's threads (PyTorch's are global:
    ``torch.set_num_threads``). ``uint8_input``: the backend takes uint8 images (resized and
    cropped, 0-255) and normalises them with ``normalization``; OpenVINO does it inside its
    compiled graph (``Backend.input_dtype`` says what a backend takes). ``throughput``:
    compiled for :meth:`Backend.map` over many batches, where the runtime has streams
    (OpenVINO's THROUGHPUT hint); a single call may then be slower.
    """
    kind = resolve_backend(kind)
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}: expected one of "
                         f"{', '.join((AUTO, INT8, 'eager') + BACKENDS)}")
    model, input_size, recorded = _resolve_model(model, weights, input_size)
    normalization = normalization or recorded
    if kind in ("openvino", "openvino-int8"):
        from .int8 import normalization_of
        from .openvino import openvino_runner

        source = _calibration_source(kind, calibration) if kind in CALIBRATED else None
        runner, details = openvino_runner(
            kind, model, input_size, threads=threads, calibration=source,
            count=calibration_count, normalization=normalization or normalization_of(model),
            uint8_input=uint8_input, throughput=throughput, preprocessing=preprocessing)
        return Backend(kind, runner, input_size, details, runner.input_dtype, runner.map)
    backend = _float_backend(kind, model, input_size, threads, calibration, calibration_count,
                             normalization, preprocessing)
    if not uint8_input:
        return backend
    from .int8 import normalization_of

    return _normalizing(backend, normalization or normalization_of(model))


def _float_backend(kind: str, model: nn.Module, input_size: tuple[int, int, int],
                   threads: int | None,
                   calibration: str | Path | list[Path] | torch.Tensor | None,
                   calibration_count: int, normalization: Normalization | None,
                   preprocessing: Preprocessing | None = None) -> Backend:
    """The PyTorch and onnxruntime kinds of :func:`load_backend`, normalised input."""
    if kind == "torch":
        return Backend(kind, model, input_size)
    if kind in TORCH_KINDS:
        return Backend(kind, optimize(model, compile=kind == "compiled", bf16=kind == "bf16"),
                       input_size)
    if kind == "onnxruntime-int8":
        from .int8 import int8_session, normalization_of

        session, details = int8_session(
            model, input_size, _calibration_source(kind, calibration),
            normalization=normalization or normalization_of(model), count=calibration_count,
            threads=threads, preprocessing=preprocessing)
        return Backend(kind, OrtRunner(session, in_chans=input_size[0]), input_size, details)
    session, details = fp32_session(model, input_size, threads=threads)
    return Backend(kind, OrtRunner(session, in_chans=input_size[0]), input_size, details)
