"""OpenVINO: fp32 and int8 CPU inference, and the OpenVINO IR (``.xml`` + ``.bin``) format.

The model reaches OpenVINO through ``torch.export`` (batch, height and width dynamic, BN
folded first, as for ONNX) and ``openvino.convert_model``. Int8 is NNCF's post-training
quantization with its defaults (the performance preset: symmetric int8 activations,
per-channel int8 weights), calibrated on real images preprocessed like the model's inputs.

On CPUs with bf16 instructions OpenVINO runs float models in bf16 unless told otherwise;
every model compiled here asks for f32, so ``openvino`` is exact to about 1e-5 and the ops
NNCF leaves in float stay float32 in ``openvino-int8``.

Converting takes seconds and calibrating minutes, so a converted fp32 model
(:func:`fp32_model`, keyed by the weights' hash, the input size and the versions) and a
quantized model are cached under the user cache folder (:mod:`resnets.export.model_cache`:
``$RESNETS_CACHE/openvino``, by default ``~/.cache/resnets/openvino``), keyed by
the sha256 of the fp32 weights and architecture, the calibration set (folder, files and
count, or the tensor's bytes), the preprocessing, and the OpenVINO and NNCF versions.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..files import atomic_output
from ..weights.preprocessing import Preprocessing
from .graphs import Uint8Input
from .int8 import agreement, calibration_identity, preprocess_files
from .model_cache import cache_dir, cache_key, is_sealed, model_sha256, package_versions, store
from .onnx import compare_outputs, require_extra, runtime_input
from .optimize import fold_batchnorm
from .shapes import check_inputs, dynamic_shapes, input_dtype, quiet, sample_input

INPUT_NAME = "input"  # the same tensor names as the ONNX export
OUTPUT_NAME = "logits"
# Part of the cache key: bump it when conversion or quantization settings change, so that
# models made the old way are not reused.
PIPELINE_VERSION = 1

Normalization = tuple[tuple[float, ...], tuple[float, ...]]


class OpenVinoFailure(ValueError):
    """OpenVINO or NNCF could not convert, quantize or compile a model (an op the converter
    lacks, an error inside NNCF): a limit of the runtime, not a fault in the inputs, so
    ``int8`` may fall back to onnxruntime. A ValueError, so that the CLI prints it as one
    line when the user named the OpenVINO backend."""


def _first_line(e: BaseException) -> str:
    """The first line of a runtime's (often many-line) message, past OpenVINO's
    ``Exception from src/...cpp:N:`` source locations, or the exception's type."""
    lines = [line.strip() for line in str(e).splitlines()
             if line.strip() and not line.startswith("Exception from ")]
    return lines[0] if lines else type(e).__name__


def _require(module: str) -> ModuleType:
    _opt_out_of_telemetry()
    return require_extra(module, "openvino", "openvino and nncf")


def _opt_out_of_telemetry() -> None:
    """Keep OpenVINO's and NNCF's usage telemetry off in this process; called before either
    is imported.

    Without a consent file, ``openvino_telemetry`` (2025.2) sends events from the moment
    ``openvino`` is imported, each from a forked process that tries to reach Google
    Analytics for up to 3 s: without internet a finished command could wait on them, and a
    Ctrl-C printed a traceback from every one still running. Its only
    off switches are ``opt_in_out --opt_out``, which writes a consent file under the
    user's home for every program, and ``CI=true``, which means more than this to other
    tools and is inherited by child processes. Both OpenVINO and NNCF fall back to a stub
    that sends nothing when ``openvino_telemetry`` cannot be imported, so it is marked
    unimportable here (a ``None`` entry in ``sys.modules``), for this process only. Left
    alone if something imported it first."""
    sys.modules.setdefault("openvino_telemetry", None)


def require_openvino() -> ModuleType:
    """The ``openvino`` module, or a one-line error naming the extra to install."""
    return _require("openvino")


_CORE: list[Any] = []
_CORE_LOCK = threading.Lock()


def core() -> Any:  # -> openvino.Core
    """The process's one ``openvino.Core``, made on first use; every model here is read and
    compiled through it.

    One Core, never freed, is a safety measure, not only a saving: OpenVINO's CPU plugin
    (2026.4) gives the thread that creates it an alternate signal stack of its own and puts
    back the previous one when the plugin is freed. With a Core per call, two models
    compiled one after the other and freed in the same order leave the thread's alternate
    stack pointing at unmapped memory, and the next Python signal handler that runs on it
    (Ctrl-C, SIGTERM under a server, the SIGCHLD handler PyTorch's DataLoader installs)
    kills the process with SIGSEGV. One plugin for the life of the process keeps its stack
    mapped (``tests/export/test_openvino.py::test_signals_after_models_are_freed``)."""
    with _CORE_LOCK:
        if not _CORE:
            _CORE.append(require_openvino().Core())
        return _CORE[0]


def read_ir(path: str | Path):  # -> openvino.Model
    """The OpenVINO IR at ``path`` (``.xml``, its ``.bin`` beside it). A file OpenVINO cannot
    read (damaged, not an IR) is a ValueError naming it, not OpenVINO's RuntimeError."""
    try:
        return core().read_model(str(path))
    except RuntimeError as e:  # what OpenVINO raises for every failure of its own
        raise ValueError(f"{path}: OpenVINO cannot read it as an IR with its .bin "
                         f"({_first_line(e)})") from None


def require_nncf() -> ModuleType:
    """The ``nncf`` module, imported quietly (it logs about CUDA and telemetry on import)."""
    with _quiet_logs():
        return _require("nncf")


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """NNCF's progress bars go to stdout and its advice through logging; keep errors only."""
    logging.disable(logging.WARNING)
    try:
        with quiet():
            yield
    finally:
        logging.disable(logging.NOTSET)


def versions() -> dict[str, str | None]:
    """The installed OpenVINO and NNCF versions, and torch's, whose tracing feeds OpenVINO's
    converter (None where missing)."""
    return package_versions("openvino", "nncf", "torch")


def convert(model: nn.Module, input_size: tuple[int, int, int]):  # -> openvino.Model
    """``model`` (BN folded) as an OpenVINO model with dynamic batch, height and width."""
    ov = require_openvino()
    graph = fold_batchnorm(model.eval())
    try:
        with quiet():
            sample = sample_input(input_size, dtype=input_dtype(model))
            program = torch.export.export(graph, (sample,),
                                          dynamic_shapes=dynamic_shapes())
            converted = ov.convert_model(program)
    except Exception as e:  # torch.export and the converter raise many types
        raise OpenVinoFailure(f"cannot convert {type(model).__name__} to OpenVINO: "
                              f"{_first_line(e)}") from None
    converted.inputs[0].get_tensor().set_names({INPUT_NAME})
    converted.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    return converted


def compile_model(model: Any, threads: int | None = None, exact: bool = True,
                  throughput: bool = False):
    """A CPU ``CompiledModel`` of an ``openvino.Model`` or IR path, ``threads`` pinned.

    ``exact`` asks for f32 inference precision (OpenVINO's CPU default is bf16 where the CPU
    has it). ``throughput``: OpenVINO's THROUGHPUT hint, several streams (one per core or
    two here) that run requests side by side, for :meth:`OvRunner.map`; one request alone
    then runs on one stream's threads."""
    config: dict[str, Any] = {}
    if exact:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if throughput:
        config["PERFORMANCE_HINT"] = "THROUGHPUT"
    try:
        return core().compile_model(model if not isinstance(model, Path) else str(model),
                                       "CPU", config)
    except RuntimeError as e:  # what OpenVINO raises for every failure of its own
        raise OpenVinoFailure(f"OpenVINO cannot compile the model: {_first_line(e)}") from None


def with_uint8_input(model: Any, normalization: Normalization):  # -> openvino.Model
    """``model`` (float32, normalised ``(N, C, H, W)`` input) taking uint8 images instead
    (0-255, resized and cropped): OpenVINO's ``PrePostProcessor`` converts them to float32,
    scales by 1/255 and normalises with ``normalization`` (mean, std) inside the compiled
    graph, the steps of :meth:`resnets.weights.Preprocessing.normalize`, so no float copy of
    the batch is made in Python. Changes ``model`` in place and returns it."""
    ov = require_openvino()
    mean, std = normalization
    ppp = ov.preprocess.PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8)
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).scale(255.0) \
        .mean(list(mean)).scale(list(std))
    return ppp.build()


class OvRunner:
    """Call a compiled OpenVINO model like a model: an ``(N, C, H, W)`` tensor in (float, or
    uint8 for a graph that takes images, :func:`with_uint8_input`), logits out."""

    def __init__(self, compiled, in_chans: int = 3) -> None:
        self.compiled = compiled
        self.in_chans = in_chans
        self.request = compiled.create_infer_request()
        uint8 = compiled.inputs[0].get_element_type().get_type_name() == "u8"
        self.input_dtype = torch.uint8 if uint8 else torch.float32

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = runtime_input(x, self.in_chans, self.input_dtype)
        self.request.infer({0: array})
        # copied: the request reuses its output buffer on the next call
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())

    def map(self, batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Logits of each batch, in order, several in flight (OpenVINO's ``AsyncInferQueue``,
        as many requests as the compiled model's streams want): on a model compiled for
        throughput the streams run side by side, and inference never waits for the caller
        to make the next batch. Takes the batches as they come, so a lazy iterable is read
        while earlier batches run."""
        ov = require_openvino()
        jobs = self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        queue = ov.AsyncInferQueue(self.compiled, max(1, int(jobs)))
        done: dict[int, torch.Tensor] = {}

        def finished(request, index: int) -> None:  # on OpenVINO's thread, the GIL held
            done[index] = torch.from_numpy(request.get_output_tensor(0).data.copy())

        queue.set_callback(finished)
        submitted = returned = 0
        for x in batches:
            queue.start_async({0: runtime_input(x, self.in_chans, self.input_dtype)},
                              submitted)
            submitted += 1
            while returned in done:
                yield done.pop(returned)
                returned += 1
        queue.wait_all()
        while returned < submitted:
            yield done.pop(returned)
            returned += 1


def write_ir(model: Any, path: str | Path, *, make_parents: bool = False,
             check: Callable[[Path, Path], None] | None = None) -> Path:
    """Write an ``openvino.Model`` as ``path`` (``.xml``) and its ``.bin``, both or neither.

    Both files are written under temporary names beside their destinations and checked
    (``check(xml, bin)``, by default read back) before being moved into place, the ``.bin``
    first: a reader that finds the ``.xml`` finds its weights. Float weights stay float32
    (``save_model`` would halve them to fp16 and change the outputs).
    """
    ov = require_openvino()
    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"an OpenVINO IR is a .xml file with a .bin beside it, got "
                         f"{path.name!r}: name the output like model.xml")
    weights = path.with_suffix(".bin")
    with atomic_output(path, make_parents=make_parents) as tmp_xml, \
            atomic_output(weights) as tmp_bin:  # inner: replaced first
        ov.serialize(model, str(tmp_xml), str(tmp_bin))
        if check is None:
            core().read_model(str(tmp_xml), str(tmp_bin))
        else:
            check(tmp_xml, tmp_bin)
    return path


def export_openvino(model: nn.Module, path: str | Path, input_size: tuple[int, int, int], *,
                    atol: float = 1e-4, rtol: float = 1e-6,
                    metadata: dict[str, str] | None = None) -> tuple[float, float]:
    """Write ``model`` as an fp32 OpenVINO IR, checked against PyTorch at two input shapes
    before it is moved into place. ``metadata`` goes into ``rt_info`` under ``resnets``
    (``model.get_rt_info(["resnets", key])``). Returns (max |diff|, tolerance)."""
    model = model.eval()
    converted = convert(model, input_size)
    for key, value in (metadata or {}).items():
        converted.set_rt_info(value, ["resnets", key])
    result: list[float] = []

    def check(xml: Path, weights: Path) -> None:
        loaded = core().read_model(str(xml), str(weights))
        runner = OvRunner(compile_model(loaded), in_chans=input_size[0])
        inputs = check_inputs(input_size, input_dtype(model))
        diff, tolerance = compare_outputs(model, runner, inputs, atol, rtol, "OpenVINO")
        if not diff <= tolerance:
            raise ValueError(f"OpenVINO output differs from PyTorch by {diff:.2e} > "
                             f"{tolerance:.1e}; nothing was written")
        result[:] = [diff, tolerance]

    write_ir(converted, path, check=check)
    return result[0], result[1]


def quantize_openvino(model: Any, images: torch.Tensor):  # -> openvino.Model
    """NNCF post-training int8 of an ``openvino.Model``, calibrated on every one of ``images``
    (float, normalized), fed one at a time (NNCF's statistics assume batch 1)."""
    nncf = require_nncf()
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"calibration needs a non-empty (N, C, H, W) batch, got shape "
                         f"{tuple(images.shape)}")
    arrays = images.detach().to(torch.float32).cpu().numpy()
    dataset = nncf.Dataset([arrays[i:i + 1] for i in range(len(arrays))])
    try:
        with _quiet_logs():
            return nncf.quantize(model, dataset, subset_size=len(arrays))
    except Exception as e:  # NNCF and the OpenVINO calls under it raise many types
        raise OpenVinoFailure(f"NNCF cannot quantize the model: {_first_line(e)}") from None


def int8_cache_key(model: nn.Module, input_size: tuple[int, int, int],
                   calibration: dict[str, Any], normalization: Normalization) -> str:
    """The cache key of a quantized model: everything its int8 weights and ranges depend on."""
    return cache_key({"pipeline": PIPELINE_VERSION, "weights": model_sha256(model),
                      "input_size": list(input_size),
                      "normalization": [list(n) for n in normalization],
                      "calibration": calibration, **versions()})


def fp32_model(model: nn.Module, input_size: tuple[int, int, int], *, use_cache: bool = True,
               reuse: bool = True) -> tuple[Any, dict[str, Any]]:
    """:func:`convert` of ``model``, from the cache when it holds one: converting goes through
    ``torch.export`` and takes seconds, longer than predicting a few hundred small images.
    ``reuse=False`` converts again and replaces the entry (one that failed its check).
    Returns (``openvino.Model``, details: cached or not, the cache file)."""
    ov = require_openvino()
    digest = cache_key({"pipeline": PIPELINE_VERSION, "weights": model_sha256(model),
                        "input_size": list(input_size), "precision": "fp32", **versions()})
    path = cache_dir("openvino") / f"{type(model).__name__.lower()}-fp32-{digest[:32]}.xml"
    cached = _read_cached(ov, path, use_cache and reuse)
    if cached is not None:
        return cached, {"cached": True, "cache_file": str(path)}
    converted = convert(model, input_size)
    return converted, _store(converted, path, use_cache)


def _read_cached(ov: ModuleType, path: Path, use_cache: bool,
                 sealed: bool = False) -> Any | None:
    """The cached model at ``path``, or None (no entry, or a damaged one to replace).
    ``sealed`` (int8): only an entry whose files match their digest (:func:`is_sealed`)."""
    if sealed and not is_sealed(path):
        return None
    if use_cache and path.is_file() and path.with_suffix(".bin").is_file():
        try:
            return read_ir(path)
        except ValueError:
            return None
    return None


def _store(model: Any, path: Path, use_cache: bool, sealed: bool = False) -> dict[str, Any]:
    """Write a converted model (``.xml`` and ``.bin``) to the cache (:func:`store`)."""
    return store(path, lambda p: write_ir(model, p, make_parents=True), use_cache, sealed)


def int8_model(model: nn.Module, input_size: tuple[int, int, int],
               calibration: str | Path | list[Path] | torch.Tensor, *, count: int = 128,
               normalization: Normalization, seed: int = 0, use_cache: bool = True,
               preprocessing: Preprocessing | None = None
               ) -> tuple[Any, torch.Tensor | None, dict[str, Any]]:
    """The NNCF int8 model of ``model``, from the cache when it holds one; calibration
    images are resized and cropped as ``preprocessing`` does
    (:func:`resnets.export.int8.preprocess_files`).

    Returns (``openvino.Model``, the calibration images or None on a cache hit, details).
    """
    ov = require_openvino()  # NNCF only on a miss: a cached model runs without it
    identity, picked = calibration_identity(calibration, count, seed, preprocessing)
    key = int8_cache_key(model, input_size, identity, normalization)
    path = cache_dir("openvino") / f"{type(model).__name__.lower()}-{key[:32]}.xml"
    cached = _read_cached(ov, path, use_cache, sealed=True)
    if cached is not None:
        return cached, None, {"cached": True, "cache_file": str(path)}
    if isinstance(calibration, torch.Tensor):
        images = calibration
    else:
        images = preprocess_files(picked, input_size[1:], *normalization, preprocessing)
    quantized = quantize_openvino(convert(model, input_size), images)
    return quantized, images, _store(quantized, path, use_cache, sealed=True)


def openvino_runner(kind: str, model: nn.Module, input_size: tuple[int, int, int], *,
                    threads: int | None = None,
                    calibration: str | Path | list[Path] | torch.Tensor | None = None,
                    count: int = 128,
                    normalization: Normalization | None = None,
                    uint8_input: bool = False, throughput: bool = False,
                    preprocessing: Preprocessing | None = None
                    ) -> tuple[OvRunner, dict[str, Any]]:
    """``openvino`` (fp32) or ``openvino-int8`` as a callable, with what was checked.

    fp32 reports its max |diff| against PyTorch; a fresh int8 model reports its top-1
    agreement and lowest logit cosine with fp32 on the calibration images. ``uint8_input``:
    the runner takes uint8 images and normalises them in the graph with ``normalization``
    (:func:`with_uint8_input`); the cached models stay float-input. ``throughput``: compiled
    for :meth:`OvRunner.map` (:func:`compile_model`).
    """
    model = model.eval()
    if uint8_input and normalization is None:
        raise ValueError("uint8 input needs the normalization (mean, std) to apply in the graph")
    if kind == "openvino":
        reference: nn.Module = Uint8Input(model, *normalization).eval() if uint8_input \
            else model
        inputs = check_inputs(input_size, input_dtype(reference))[:1]
        for reuse in (True, False):  # a cached model that fails the check (damaged, or
            # not this model's) is converted again and replaced, as ONNX's cached graphs are
            converted, details = fp32_model(model, input_size, reuse=reuse)
            if uint8_input:
                converted = with_uint8_input(converted, normalization)
            runner = OvRunner(compile_model(converted, threads, throughput=throughput),
                              input_size[0])
            diff, tolerance = compare_outputs(reference, runner, inputs, 1e-4, 1e-6, "OpenVINO")
            if diff <= tolerance or not details.get("cached"):
                break
        if not diff <= tolerance:  # a fresh conversion that is not the model (or NaN)
            if details.get("cache_file"):  # not kept for the next run
                entry = Path(details["cache_file"])
                entry.unlink(missing_ok=True)
                entry.with_suffix(".bin").unlink(missing_ok=True)
            raise OpenVinoFailure(f"OpenVINO output differs from PyTorch by {diff:.2e} > "
                                  f"{tolerance:.1e}")
        return runner, {"max_abs_diff": diff, **details}
    if kind != "openvino-int8":
        raise ValueError(f"unknown OpenVINO backend {kind!r}: expected openvino or "
                         f"openvino-int8")
    if calibration is None or normalization is None:
        raise ValueError("openvino-int8 needs calibration images and their normalization")
    quantized, images, details = int8_model(model, input_size, calibration, count=count,
                                            normalization=normalization,
                                            preprocessing=preprocessing)
    if images is not None:  # fresh: compare with fp32 on the (normalised) calibration images
        float_runner = OvRunner(compile_model(quantized, threads), input_size[0])
        with torch.inference_mode():
            top1, cosine = agreement(model(images), float_runner(images))
        details.update(calibration_images=len(images), top1_agreement=top1, min_cosine=cosine)
        if not uint8_input and not throughput:
            return float_runner, details
    if uint8_input:
        quantized = with_uint8_input(quantized, normalization)
    compiled = compile_model(quantized, threads, throughput=throughput)
    return OvRunner(compiled, input_size[0]), details
