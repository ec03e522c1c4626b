"""ONNX export with dynamic batch, height and width, checked by running the file.

Two exporters exist in PyTorch: the ``torch.export``-based one (``dynamo=True``, the default
since PyTorch 2.9) and the TorchScript-based legacy one, which is deprecated. For ResNet-50
both become the same graph once onnxruntime has optimized it (53 convolutions with BN and
ReLU fused, in the blocked NCHWc layout; only the pooling op of the head differs), so the
dynamo exporter goes first and the legacy one is the fallback for a model it cannot handle.
Every file is checked with ``onnx.checker`` and by comparing onnxruntime's output with
PyTorch's at two input shapes before it is moved into place.

Exporting takes seconds (the dynamo exporter traces through ``torch.export``), so the graphs
the ``onnxruntime`` backend runs are kept in the model cache (:func:`fp32_session`,
``$RESNETS_CACHE/onnxruntime``), keyed like OpenVINO's converted ones.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from ..files import atomic_copy, atomic_output
from .model_cache import cache_dir, cache_key, model_sha256, package_versions, store
from .optimize import fold_batchnorm
from .shapes import check_inputs, input_dtype, quiet, sample_input

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORTERS = ("auto", "dynamo", "legacy")
# Part of the cache key of an exported graph (:func:`fp32_session`): bump it when the export
# changes (BN folding, the exporters tried, their options), so graphs made the old way are
# not reused.
PIPELINE_VERSION = 1


class MissingExtraError(ImportError, ValueError):
    """An optional dependency is not installed. A ValueError too, so the CLI prints one line."""


def require_extra(module: str, extra: str = "onnx",
                  brings: str = "onnx, onnxruntime and onnxscript") -> ModuleType:
    """``module`` of an optional extra, or a one-line error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{module} is not installed: pip install 'resnets[{extra}]' "
                                f"(it brings {brings})") from None


def require_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or a one-line error naming the extra to install."""
    return require_extra("onnxruntime")


def require_onnx() -> ModuleType:
    return require_extra("onnx")


def session_options(threads: int | None = None):  # -> onnxruntime.SessionOptions
    """Full graph optimization, sequential execution, ``threads`` intra-op threads."""
    ort = require_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # errors only: its warnings are about saving optimized graphs
    return opts


def ort_session(path: str | Path, threads: int | None = None):  # -> InferenceSession
    """An onnxruntime CPU session for ``path`` with pinned thread counts; a file onnxruntime
    cannot load (damaged, not ONNX) is a ValueError naming it."""
    ort = require_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        return ort.InferenceSession(str(path), session_options(threads),
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's errors derive from Exception alone
        raise ValueError(f"{path}: onnxruntime cannot load it as an ONNX model "
                         f"({_first_line(e)})") from None


class OrtRunner:
    """Call an onnxruntime session like a model: float ``(N, C, H, W)`` tensor in, logits out."""

    def __init__(self, session, in_chans: int = 3) -> None:
        self.session = session
        self.in_chans = in_chans
        self.input_name = session.get_inputs()[0].name
        uint8 = session.get_inputs()[0].type == "tensor(uint8)"
        self.input_dtype = torch.uint8 if uint8 else torch.float32

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = runtime_input(x, self.in_chans, self.input_dtype)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


def runtime_input(x: torch.Tensor, in_chans: int, dtype: torch.dtype) -> np.ndarray:
    """A batch checked and converted for a runtime: float32, or uint8 for a graph that takes
    images as they are (a float batch there is refused, not truncated)."""
    if x.dim() != 4:
        raise ValueError(f"expected a batch of images (N, C, H, W), got shape "
                         f"{tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"expected a {in_chans}-channel input, got {x.shape[1]} "
                         f"channels (shape {tuple(x.shape)}): convert the images to RGB")
    if dtype == torch.uint8 and x.dtype != torch.uint8:
        raise ValueError(f"this graph takes uint8 images (0-255, resized and cropped), got "
                         f"{str(x.dtype).removeprefix('torch.')}")
    return np.ascontiguousarray(x.detach().to(dtype).cpu().numpy())


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote and how well it matches PyTorch."""

    path: Path
    exporter: str
    max_abs_diff: float
    tolerance: float


def _export_dynamo(model: nn.Module, sample: torch.Tensor, path: Path) -> None:
    require_extra("onnxscript")
    shapes = ({0: "batch", 2: "height", 3: "width"},)  # names become the ONNX dim names
    with quiet():
        program = torch.onnx.export(model, (sample,), dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamic_shapes=shapes,
                                    optimize=True, verbose=False)
        program.save(str(path), external_data=False)


@contextlib.contextmanager
def _native_output_to_devnull() -> Iterator[None]:
    """The legacy exporter's C++ side prints the whole graph to stdout when it fails, past
    ``sys.stdout``; point file descriptors 1 and 2 at /dev/null meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = [os.dup(1), os.dup(2)]
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _export_legacy(model: nn.Module, sample: torch.Tensor, path: Path) -> None:
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch"}}
    with quiet(), _native_output_to_devnull():
        torch.onnx.export(model, (sample,), str(path), dynamo=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=axes)


_EXPORT_FNS = {"dynamo": _export_dynamo, "legacy": _export_legacy}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(e: BaseException) -> str:
    """The first line of the innermost cause: the exporters wrap the useful message."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = _ANSI.sub("", str(e)).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def verify_onnx(path: str | Path, model: nn.Module, inputs: list[torch.Tensor],
                atol: float = 1e-4, rtol: float = 1e-6) -> tuple[float, float]:
    """``onnx.checker`` plus onnxruntime against ``model`` on ``inputs``.

    Returns (max |diff|, tolerance). The tolerance is ``atol + rtol * max|logit|``: random-init
    networks can have logits in the hundreds, where float32 rounding alone passes 1e-4.
    """
    onnx = require_onnx()
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ValueError(f"the exported ONNX file fails onnx.checker: {_first_line(e)}") from None
    runner = OrtRunner(ort_session(path, threads=None), in_chans=inputs[0].shape[1])
    return compare_outputs(model, runner, inputs, atol, rtol, "onnxruntime")


def compare_outputs(model: nn.Module, runner, inputs: list[torch.Tensor], atol: float,
                    rtol: float, engine: str) -> tuple[float, float]:
    """(max |diff|, tolerance) of ``runner`` against PyTorch on ``inputs``; the tolerance
    grows with the logits (``atol + rtol * max |logit|``)."""
    worst, tolerance = 0.0, atol
    with torch.inference_mode():
        for x in inputs:
            ref = model(x)
            out = runner(x)
            if out.shape != ref.shape:
                raise ValueError(f"{engine} returned shape {tuple(out.shape)} for input "
                                 f"{tuple(x.shape)}, PyTorch {tuple(ref.shape)}")
            worst = max(worst, float((out - ref).abs().max()))
            tolerance = max(tolerance, atol + rtol * float(ref.abs().max()))
    return worst, tolerance


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Set ``metadata_props`` of the ONNX file at ``path`` (in place: a temporary file)."""
    onnx = require_onnx()
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, metadata)
    onnx.save(proto, str(path))


def export_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, int, int], *,
                fold_bn: bool = True, exporter: str = "auto", verify: bool = True,
                atol: float = 1e-4, metadata: dict[str, str] | None = None) -> OnnxExport:
    """Write ``model`` as ONNX (batch, height and width dynamic), verified, atomically.
    ``metadata`` becomes the file's ``metadata_props``.

    ``fold_bn`` folds BN into the convolutions before export (onnxruntime does the same when
    loading; other runtimes may not). The check compares with the unfolded model.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}: expected one of "
                         f"{', '.join(EXPORTERS)}")
    require_onnxruntime()
    require_onnx()
    model = model.eval()
    graph = fold_batchnorm(model) if fold_bn else model
    sample = sample_input(input_size, dtype=input_dtype(model))
    order = ["dynamo", "legacy"] if exporter == "auto" else [exporter]
    failures = []
    with atomic_output(path) as tmp:
        for name in order:
            try:
                _EXPORT_FNS[name](graph, sample, tmp)
                break
            except Exception as e:  # any exporter failure: try the next, then report all
                failures.append(f"{name} exporter: {_first_line(e)}")
        else:
            raise ValueError(f"cannot export {type(model).__name__} to ONNX ("
                             f"{'; '.join(failures)}); try the torch-export format")
        if metadata:
            _add_metadata(tmp, metadata)
        inputs = check_inputs(input_size, input_dtype(model))
        diff, tolerance = (verify_onnx(tmp, model, inputs, atol) if verify
                           else (float("nan"), atol))
        if verify and not diff <= tolerance:
            raise ValueError(f"ONNX output differs from PyTorch by {diff:.2e} > {tolerance:.1e} "
                             f"({name} exporter); nothing was written")
    return OnnxExport(Path(path), name, diff, tolerance)


def fp32_session(model: nn.Module, input_size: tuple[int, int, int], *,
                 threads: int | None = None, use_cache: bool = True):
    """An onnxruntime session of ``model`` exported by :func:`export_onnx`, the graph from the
    cache when it holds one (a damaged entry, or one that no longer matches PyTorch, is
    exported again and replaced; a read-only cache costs the next run an export).

    The key is everything the graph depends on: the weights and architecture
    (:func:`~resnets.export.model_cache.model_sha256`: a super-resolution graph's scale is in
    its repr), the traced input size, the exporter (``auto``: dynamo, then legacy) and the
    versions of torch and onnxscript (which carry the exporters and their default opset),
    onnx and onnxruntime. Returns (``InferenceSession``, details: ``max_abs_diff`` against
    PyTorch, ``cached``, ``cache_file``, and ``cache_error`` where it could not be written).
    """
    require_onnxruntime()
    model = model.eval()
    key = cache_key({"pipeline": PIPELINE_VERSION, "weights": model_sha256(model),
                     "input_size": list(input_size), "precision": "fp32", "exporter": "auto",
                     **package_versions("torch", "onnxscript", "onnx", "onnxruntime")})
    path = cache_dir("onnxruntime") / f"{type(model).__name__.lower()}-fp32-{key[:32]}.onnx"
    if use_cache and path.is_file():
        cached = _read_cached(path, model, input_size, threads)
        if cached is not None:
            session, diff = cached
            return session, {"max_abs_diff": diff, "cached": True, "cache_file": str(path)}
    with tempfile.TemporaryDirectory() as work:
        fresh = Path(work) / "fp32.onnx"
        diff = export_onnx(model, fresh, input_size).max_abs_diff
        session = ort_session(fresh, threads)  # the session holds the graph; the file can go
        details = store(path, lambda dest: atomic_copy(fresh, dest), use_cache)
    return session, {"max_abs_diff": diff, **details}


def _read_cached(path: Path, model: nn.Module, input_size: tuple[int, int, int],
                 threads: int | None):  # -> tuple[InferenceSession, float] | None
    """The cached graph at ``path`` as a session and its max |diff| against ``model`` on one
    input (as OpenVINO's cached graphs are checked on every load), or None: an entry that
    does not load (cut off, overwritten) or does not match is replaced."""
    try:
        session = ort_session(path, threads)
        runner = OrtRunner(session, in_chans=input_size[0])
        inputs = check_inputs(input_size, input_dtype(model))[:1]
        diff, tolerance = compare_outputs(model, runner, inputs, 1e-4, 1e-6, "onnxruntime")
    except Exception:  # onnxruntime's load and run errors derive from Exception alone
        return None
    return (session, diff) if diff <= tolerance else None
