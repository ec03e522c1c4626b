"""Post-training int8: onnxruntime's static quantizer, calibrated on real images.

PyTorch's eager quantization (``torch.ao.quantization``) is deprecated; onnxruntime's static
quantizer is maintained and its CPU kernels use VNNI. The recipe is the one onnxruntime
documents for x86: QDQ format, per-channel int8 weights, uint8 activations. With int8
activations instead (the quantizer's default) onnxruntime 1.32 leaves 20 of ResNet-50's 53
convolutions in float on x86; with uint8 every Conv and Add becomes a QLinear op in NHWC.
Ranges come from MinMax calibration on real images, preprocessed like the model's inputs.

Calibrating takes longer than predicting a few hundred small images, so :func:`int8_session`
keeps the quantized model in the user cache folder (``$RESNETS_CACHE/onnxruntime``, by
default ``~/.cache/resnets/onnxruntime``), keyed like OpenVINO's
(:mod:`resnets.export.model_cache`): the weights' sha256, the input size, the calibration
set, the preprocessing, the weights' bit width and the onnxruntime and onnx versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import random
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.io import ImageReadError, is_image_file, read_rgb
from ..files import atomic_copy, atomic_output
from ..weights.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from .model_cache import (
    cache_dir,
    cache_key,
    is_sealed,
    model_sha256,
    package_versions,
    store,
)
from .onnx import OrtRunner, export_onnx, ort_session, require_onnxruntime

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Part of the cache key of a quantized model: bump it when the export or the quantizer's
# settings change, so that models made the old way are not reused.
PIPELINE_VERSION = 1

Normalization = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per channel


@dataclass(frozen=True)
class Int8Report:
    """A quantized model and how closely it follows float32 on the calibration images."""

    path: Path
    calibration_images: int
    top1_agreement: float  # fraction of images where int8 and fp32 pick the same class
    min_cosine: float  # lowest cosine similarity of int8 and fp32 logits


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder``, recursively, in sorted order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise ValueError(f"no images under {folder} (expected .jpg, .png, ... files)")
    return files


def normalization_of(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) the model's weights expect: their record's when the model was built
    with ``pretrained=...``, else ImageNet's."""
    pre = getattr(getattr(model, "pretrained_record", None), "preprocessing", None)
    if pre is not None:
        return tuple(pre.mean), tuple(pre.std)
    return IMAGENET_MEAN, IMAGENET_STD


def pick_calibration_files(folder: str | Path | list[Path], count: int,
                           seed: int = 0) -> list[Path]:
    """``count`` image files drawn at random (fixed seed) from ``folder`` (or a list of
    files)."""
    files = list_images(folder) if isinstance(folder, (str, Path)) else list(folder)
    return random.Random(seed).sample(files, min(count, len(files)))


def calibration_images(folder: str | Path | list[Path], count: int, size: tuple[int, int],
                       seed: int = 0, mean: tuple[float, ...] = IMAGENET_MEAN,
                       std: tuple[float, ...] = IMAGENET_STD,
                       preprocessing: Preprocessing | None = None) -> torch.Tensor:
    """``count`` images drawn at random (fixed seed) from ``folder`` (or from a list of
    files), resized and centre-cropped to ``size`` (:func:`preprocess_files`) and
    normalised."""
    return preprocess_files(pick_calibration_files(folder, count, seed), size, mean, std,
                            preprocessing)


def preprocess_files(files: list[Path], size: tuple[int, int],
                     mean: tuple[float, ...] = IMAGENET_MEAN,
                     std: tuple[float, ...] = IMAGENET_STD,
                     preprocessing: Preprocessing | None = None) -> torch.Tensor:
    """Image files read, resized and centre-cropped to ``size`` and normalised with ``mean``
    and ``std``: one batch. ``preprocessing`` (the weights' own, e.g. resize 232 then crop
    224) gives the resize and interpolation; without it the shorter side is resized to
    ``size``. A file that cannot be read is left out, with one warning for them all (the
    images being predicted may be the calibration set, and an unreadable one is reported
    there); none readable is an error."""
    h, w = size
    if h != w:
        raise ValueError(f"calibration images are square crops, got size {h}x{w}")
    if preprocessing is None:
        pre = Preprocessing(resize=h, crop=h, mean=mean, std=std)
    elif preprocessing.input_size != h:
        raise ValueError(f"the preprocessing ({preprocessing.describe()}) makes "
                         f"{preprocessing.input_size} px inputs; the model takes {h}")
    else:
        pre = dataclasses.replace(preprocessing, crop=h, mean=mean, std=std)
    images, unreadable = [], []
    for f in files:
        try:
            images.append(pre(read_rgb(f)))
        except ImageReadError as e:
            unreadable.append(str(e))
    if not images:
        raise ValueError(f"none of the {len(files)} calibration images could be read (e.g. "
                         f"{unreadable[0] if unreadable else 'no files given'})")
    if unreadable:
        warnings.warn(f"{len(unreadable)} of the {len(files)} calibration images could not be "
                      f"read and were left out (e.g. {unreadable[0]})", stacklevel=2)
    return torch.stack(images)


def calibration_identity(calibration: str | Path | list[Path] | torch.Tensor, count: int,
                         seed: int = 0, preprocessing: Preprocessing | None = None
                         ) -> tuple[dict[str, Any], list[Path]]:
    """What the calibration set is, for a cache key: the picked files (path and the sha256
    of the content, so that images replaced by others of the same byte size calibrate
    again) and count from a folder or a list of files, and the resize and crop of
    ``preprocessing`` when given (:func:`preprocess_files`); or a tensor's sha256. Also the
    picked files (none for a tensor)."""
    if isinstance(calibration, torch.Tensor):
        t = calibration.detach().to(torch.float32).cpu().contiguous()
        return {"tensor_sha256": hashlib.sha256(t.numpy().tobytes()).hexdigest(),
                "shape": list(t.shape)}, []
    geometry = {} if preprocessing is None else {"preprocessing": {
        k: getattr(preprocessing, k) for k in ("resize", "crop", "interpolation")}}
    if isinstance(calibration, (str, Path)):
        folder = Path(calibration).resolve()
        picked = pick_calibration_files(folder, count, seed)
        files = [[str(p.relative_to(folder)), _file_sha256(p)] for p in picked]
        return {"folder": str(folder), "count": count, "seed": seed, "files": files,
                **geometry}, picked
    picked = pick_calibration_files([Path(p) for p in calibration], count, seed)
    files = [[str(p.resolve()), _file_sha256(p)] for p in picked]
    return {"count": count, "seed": seed, "files": files, **geometry}, picked


def _file_sha256(path: Path) -> str | None:
    """The sha256 of a calibration file for the cache key (a few hundred small images read
    cost little next to calibrating); None for one that cannot be read
    (:func:`preprocess_files` leaves it out)."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def cpu_has_vnni() -> bool:
    """Whether the CPU has 8-bit dot-product instructions (Linux /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # unknown: assume a current CPU
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


@contextlib.contextmanager
def _no_warnings_logged() -> Iterator[None]:
    # The quantizer logs advice (e.g. "consider pre-processing") through the root logger.
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _reader(images: torch.Tensor, input_name: str, batch: int):
    from onnxruntime.quantization import CalibrationDataReader

    class ImageBatches(CalibrationDataReader):
        """Feeds the calibration images in batches."""

        def __init__(self) -> None:
            arrays = images.numpy().astype(np.float32)
            self._batches = iter([arrays[i:i + batch] for i in range(0, len(arrays), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self._batches, None)
            return None if chunk is None else {input_name: chunk}

    return ImageBatches()


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, images: torch.Tensor, *,
                  per_channel: bool = True, method: str = "minmax",
                  preprocess_graph: bool = True, batch: int = 8) -> Path:
    """Static int8 quantization of an ONNX file, calibrated on ``images`` (float, normalized).

    ``method``: ``minmax`` keeps per-batch extremes only; ``entropy`` and ``percentile``
    hold histograms of every activation and need far more memory and time at 224x224.

    ``preprocess_graph`` runs onnxruntime's quantization pre-processing (shape inference and
    graph optimizations) first, as its documentation advises; the plain peer skips it.
    """
    require_onnxruntime()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"unknown calibration method {method!r}: expected one of "
                         f"{', '.join(CALIBRATION_METHODS)}")
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"calibration needs a non-empty (N, C, H, W) batch, got shape "
                         f"{tuple(images.shape)}")
    fp32_path = Path(fp32_path)
    import onnx  # the graph's input name, read without building a session

    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as work, _no_warnings_logged(), \
            atomic_output(out_path) as tmp:
        source = fp32_path
        if preprocess_graph:
            source = Path(work) / "preprocessed.onnx"
            # ONNX shape inference suffices for a CNN. The symbolic one gives up on option-A
            # shortcuts, and when it does it dumps its model into the working directory.
            quant_pre_process(str(fp32_path), str(source), skip_symbolic_shape=True)
        quantize_static(
            str(source), str(tmp), _reader(images, input_name, batch),
            quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            # 7-bit weights avoid overflow in the 16-bit sums of CPUs without VNNI
            reduce_range=not cpu_has_vnni(), calibrate_method=methods[method])
        # No CalibMaxIntermediateOutputs: onnxruntime 1.32 drops the collected batches when
        # it reaches that count. MinMax keeps only per-batch min/max, so memory stays small.
    return Path(out_path)


def agreement(fp32: torch.Tensor, int8: torch.Tensor) -> tuple[float, float]:
    """(top-1 agreement, lowest cosine similarity) of two sets of logits."""
    top1 = float((fp32.argmax(1) == int8.argmax(1)).float().mean())
    cosine = float(F.cosine_similarity(fp32.double(), int8.double(), dim=1).min())
    return top1, cosine


def quantize_model(model: nn.Module, out_path: str | Path, input_size: tuple[int, int, int],
                   images: torch.Tensor, *, per_channel: bool = True, method: str = "minmax",
                   threads: int | None = None) -> Int8Report:
    """Export ``model`` to ONNX (BN folded, checked), quantize it, and compare with float32."""
    return quantized_session(model, out_path, input_size, images, per_channel=per_channel,
                             method=method, threads=threads)[1]


def quantized_session(model: nn.Module, out_path: str | Path,
                      input_size: tuple[int, int, int], images: torch.Tensor, *,
                      per_channel: bool = True, method: str = "minmax",
                      threads: int | None = None) -> tuple[Any, Int8Report]:
    """:func:`quantize_model`, and the onnxruntime session its agreement with float32 was
    measured on, for the caller to keep running (one session built, not two)."""
    model = model.eval()
    with tempfile.TemporaryDirectory() as work:
        fp32 = Path(work) / "fp32.onnx"
        export_onnx(model, fp32, input_size)
        quantize_onnx(fp32, out_path, images, per_channel=per_channel, method=method)
    session = ort_session(out_path, threads)
    int8 = OrtRunner(session, in_chans=input_size[0])
    with torch.inference_mode():
        top1, cosine = agreement(model(images), int8(images))
    return session, Int8Report(Path(out_path), len(images), top1, cosine)


def int8_session(model: nn.Module, input_size: tuple[int, int, int],
                 calibration: str | Path | list[Path] | torch.Tensor, *,
                 normalization: Normalization, count: int = 128, seed: int = 0,
                 threads: int | None = None, use_cache: bool = True,
                 preprocessing: Preprocessing | None = None) -> tuple[Any, dict[str, Any]]:
    """An onnxruntime session of ``model`` in int8 (:func:`quantize_model`), calibrated on
    ``count`` images of ``calibration`` (a folder, a list of image files, or a preprocessed
    tensor) resized and cropped as ``preprocessing`` does (:func:`preprocess_files`) and
    normalised with ``normalization`` (mean, std); the quantized model comes from the
    cache when it holds one, and a damaged entry is replaced.

    Returns (``InferenceSession``, details): ``cached``, ``cache_file`` (None when the cache
    could not be written, with ``cache_error``) and, for a fresh model, its top-1 agreement
    and lowest logit cosine with fp32 on the calibration images.
    """
    require_onnxruntime()
    model = model.eval()
    identity, picked = calibration_identity(calibration, count, seed, preprocessing)
    key = cache_key({"pipeline": PIPELINE_VERSION, "weights": model_sha256(model),
                     "input_size": list(input_size),
                     "normalization": [list(n) for n in normalization],
                     "calibration": identity, "reduce_range": not cpu_has_vnni(),
                     # the graph comes from torch's exporter (onnxscript) before quantizing
                     **package_versions("torch", "onnxscript", "onnx", "onnxruntime")})
    path = cache_dir("onnxruntime") / f"{type(model).__name__.lower()}-int8-{key[:32]}.onnx"
    if use_cache and is_sealed(path):
        try:
            return ort_session(path, threads), {"cached": True, "cache_file": str(path)}
        except Exception:  # onnxruntime's load errors derive from Exception alone
            pass  # a damaged entry (cut off, overwritten): quantized again and replaced
    if isinstance(calibration, torch.Tensor):
        images = calibration
    else:
        images = preprocess_files(picked, input_size[1:], *normalization, preprocessing)
    with tempfile.TemporaryDirectory() as work:
        fresh = Path(work) / "int8.onnx"
        # the session holds the graph; the file can go
        session, report = quantized_session(model, fresh, input_size, images, threads=threads)
        details = store(path, lambda dest: atomic_copy(fresh, dest), use_cache, sealed=True)
    details.update(calibration_images=report.calibration_images,
                   top1_agreement=report.top1_agreement, min_cosine=report.min_cosine)
    return session, details
