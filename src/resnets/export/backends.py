"""One entry point for every way of running a model: a callable from images to logits.

``load_backend(kind, model)`` returns a function taking a float ``(N, 3, H, W)`` batch
(normalized like the model's training data) and returning float32 logits, whatever runs
underneath: PyTorch eager, :func:`~resnets.export.optimize`, onnxruntime fp32 or int8,
OpenVINO fp32 or int8.
``resnets predict --backend`` and ``resnets bench`` both use it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..models.registry import build_model, get_spec
from ..weights.classifier import load_classifier
from .onnx import OrtRunner, export_onnx, ort_session
from .optimize import optimize

BACKENDS = ("torch", "optimized", "compiled", "bf16", "onnxruntime", "int8", "openvino",
            "openvino-int8")
CALIBRATED = ("int8", "openvino-int8")
_ALIASES = {"eager": "torch"}


Normalization = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per channel


class Backend:
    """A model behind a uniform call; ``kind`` names what runs it."""

    def __init__(self, kind: str, fn: Callable[[torch.Tensor], torch.Tensor],
                 input_size: tuple[int, int, int], details: dict | None = None) -> None:
        self.kind = kind
        self.fn = fn
        self.input_size = input_size
        self.details = details or {}  # e.g. int8's agreement with fp32 on calibration images

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.fn(x)

    def __repr__(self) -> str:
        return f"Backend({self.kind!r}, input_size={self.input_size})"


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


def _calibration(model: nn.Module, calibration: str | Path | list[Path] | torch.Tensor | None,
                 count: int,
                 input_size: tuple[int, int, int], normalization: Normalization | None
                 ) -> torch.Tensor:
    from .int8 import calibration_images, normalization_of

    source = _calibration_source("int8", calibration)
    if isinstance(source, torch.Tensor):
        return source
    mean, std = normalization or normalization_of(model)
    return calibration_images(source, count, input_size[1:], mean=mean, std=std)


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
                 normalization: Normalization | None = None) -> Backend:
    """``model`` (a module, or a registry name with optional ``weights``) run by ``kind``.

    Kinds: ``torch`` (eager, alias ``eager``), ``optimized`` (BN folded, channels-last),
    ``compiled`` (the same through ``torch.compile``), ``bf16``, ``onnxruntime`` (fp32) and
    ``int8`` (onnxruntime static quantization calibrated on ``calibration``: a folder of
    images, a list of image files or a preprocessed tensor), ``openvino`` (fp32) and
    ``openvino-int8`` (NNCF, calibrated like ``int8``; the quantized model is cached, see
    :mod:`resnets.export.openvino`).
    Calibration images are normalized with ``normalization`` (mean, std), by default the
    one the weights record (``resnets train`` metadata, a pretrained record) or ImageNet's.
    ``threads`` pins onnxruntime's and OpenVINO's threads (PyTorch's are global:
    ``torch.set_num_threads``).
    """
    kind = _ALIASES.get(kind, kind)
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}: expected one of "
                         f"{', '.join(('eager',) + BACKENDS)}")
    model, input_size, recorded = _resolve_model(model, weights, input_size)
    if kind == "torch":
        return Backend(kind, model, input_size)
    if kind in ("optimized", "compiled", "bf16"):
        return Backend(kind, optimize(model, compile=kind == "compiled", bf16=kind == "bf16"),
                       input_size)
    normalization = normalization or recorded
    if kind in ("openvino", "openvino-int8"):
        from .int8 import normalization_of
        from .openvino import openvino_runner

        source = _calibration_source(kind, calibration) if kind in CALIBRATED else None
        runner, details = openvino_runner(
            kind, model, input_size, threads=threads, calibration=source,
            count=calibration_count, normalization=normalization or normalization_of(model))
        return Backend(kind, runner, input_size, details)
    images = None
    if kind == "int8":
        images = _calibration(model, calibration, calibration_count, input_size, normalization)
    details = {}
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / f"{kind}.onnx"
        if kind == "int8":
            from .int8 import quantize_model

            report = quantize_model(model, path, input_size, images, threads=threads)
            details = {"calibration_images": report.calibration_images,
                       "top1_agreement": report.top1_agreement,
                       "min_cosine": report.min_cosine}
        else:
            details = {"max_abs_diff": export_onnx(model, path, input_size).max_abs_diff}
        session = ort_session(path, threads)  # the session holds the graph; the file can go
    return Backend(kind, OrtRunner(session, in_chans=input_size[0]), input_size, details)
