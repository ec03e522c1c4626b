"""CPU inference benchmark: the resnets backends against what users would run instead.

Everything is measured in one process and one run, interleaved: each repeat times every
(backend, batch) case in turn, in a rotated order, so a slow spell on a shared machine hits
all cases alike. The baseline is torchvision's eager fp32 twin of the model, holding the same
weights (for models without a twin, the resnets model in eager fp32). Peers (``compare``):
``torchvision`` (eager fp32), ``onnxruntime`` (the twin exported to ONNX, run in fp32),
``onnxruntime-int8`` (alias ``int8``: the twin's ONNX file through onnxruntime's static
quantizer with the settings it documents for x86 — QDQ, per-channel, uint8 activations — but
without its optional graph pre-processing, calibrated on the same images as ours),
``openvino`` (the twin through
``openvino.convert_model`` and ``compile_model(..., "CPU")``, asked for f32 precision: on CPUs
with bf16 instructions OpenVINO's default is bf16, which would not be an fp32 peer) and
``openvino-int8`` (NNCF's ``quantize`` of that model with its defaults, compiled with
OpenVINO's defaults, calibrated on the same images as ours). PyTorch, onnxruntime and OpenVINO
get the same thread count. Our backends are the kinds of
:func:`resnets.export.load_backend`; ``int8`` among them is the fastest int8 backend
installed, named as such in the report.
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.registry import build_model, get_spec
from ..weights.classifier import load_classifier
from ..weights.loading import load_state_dict_into
from .backends import INT8, fastest_int8_backend
from .int8 import calibration_images, normalization_of
from .openvino import (
    OvRunner,
    compile_model,
    convert,
    quantize_openvino,
    require_openvino,
    versions,
)
from .shapes import quiet, sample_input

BACKENDS = ("eager", "optimized", "compiled", "bf16", "onnxruntime", "onnxruntime-int8",
            "openvino", "openvino-int8")
PEERS = ("torchvision", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8")
# A peer is what a user would run instead: ``int8`` there stays onnxruntime's quantizer.
_PEER_ALIASES = {"int8": "onnxruntime-int8", "eager": "torchvision"}
_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
              "amx_int8", "amx_bf16")


@dataclass
class BenchConfig:
    """One benchmark run; the CLI maps its flags onto these fields."""

    model: str = "resnet50"
    batches: tuple[int, ...] = (1, 16)
    backends: tuple[str, ...] = ("eager", "optimized", "onnxruntime", INT8)  # int8: fastest
    compare: tuple[str, ...] = ("torchvision", "onnxruntime")
    threads: int | None = None  # None: every core
    repeats: int = 5
    warmup: int = 2
    min_time_s: float = 0.5  # per case and repeat; sets how many calls a repeat times
    max_calls: int = 50
    weights: str | None = None
    image_size: int | None = None  # square input side; None: the model's own
    calib_dir: str | None = None  # images to calibrate int8 on (needed for int8 cases)
    calib_images: int = 128
    exporter: str = "auto"  # ONNX exporter: auto, dynamo or legacy
    seed: int = 0

    def __post_init__(self) -> None:
        self.batches = tuple(int(b) for b in self.batches)
        # int8 is the fastest int8 backend installed, named as such (once) in the report
        resolved = (fastest_int8_backend() if b == INT8 else b for b in self.backends)
        self.backends = tuple(dict.fromkeys(resolved))
        self.compare = tuple(_PEER_ALIASES.get(p, p) for p in self.compare)
        bad = [b for b in self.backends if b not in BACKENDS]
        if bad:
            raise ValueError(f"unknown backend {bad[0]!r}: expected some of "
                             f"{', '.join((INT8, *BACKENDS))}")
        bad = [p for p in self.compare if p not in PEERS]
        if bad:
            raise ValueError(f"unknown peer {bad[0]!r}: expected some of "
                             f"{', '.join(PEERS)}")
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"batch sizes must be >= 1, got {list(self.batches)}")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError(f"need repeats >= 1 and warmup >= 0, got {self.repeats} and "
                             f"{self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


def parse_list(text: str, what: str) -> tuple[str, ...]:
    """``"a,b"`` to ``("a", "b")``; an empty list is an error naming ``what``."""
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    if not items:
        raise ValueError(f"expected a comma-separated list of {what}, got {text!r}")
    return items


def parse_batches(text: str) -> tuple[int, ...]:
    """``"1,16"`` to ``(1, 16)``."""
    items = parse_list(text, "batch sizes")
    try:
        return tuple(int(s) for s in items)
    except ValueError:
        raise ValueError(f"expected batch sizes like 1,16, got {text!r}") from None


def machine_info(threads: int) -> dict[str, Any]:
    """The CPU and library versions a result depends on."""
    cpu, flags = platform.processor() or platform.machine(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                flags = [f for f in _CPU_FLAGS if f in present]
                break
    except OSError:
        pass
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    import torchvision

    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_flags": flags, "threads": threads,
            **versions(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "onnxruntime": ort_version, "python": platform.python_version(),
            "platform": platform.platform()}


@dataclass
class _Case:
    label: str
    batch: int
    fn: Callable[[torch.Tensor], torch.Tensor]
    x: torch.Tensor
    calls: int = 1
    latencies: list[float] = field(default_factory=list)  # seconds
    repeat_medians: list[float] = field(default_factory=list)


def torchvision_twin(name: str, model: nn.Module) -> nn.Module | None:
    """torchvision's model of the same name holding ``model``'s weights, if there is one."""
    import torchvision

    builder = getattr(torchvision.models, name, None)
    if builder is None or name not in torchvision.models.list_models(torchvision.models):
        return None
    twin = builder(weights=None, num_classes=getattr(model, "num_classes", 1000))
    try:
        load_state_dict_into(twin, model.state_dict(), label=f"resnets {name}",
                             model_name=f"torchvision {name}", keep_head=True)
    except (RuntimeError, ValueError):  # built with options torchvision does not have
        return None
    return twin.eval()


def _torch_fn(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return run


class _Builder:
    """Makes the callables of one run, sharing ONNX files and calibration images."""

    def __init__(self, cfg: BenchConfig, model: nn.Module, reference: nn.Module,
                 input_size: tuple[int, int, int], work: Path, notes: list[str],
                 normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
                 ) -> None:
        self.cfg, self.model, self.reference = cfg, model, reference
        self.normalization = normalization
        self.input_size, self.work, self.notes = input_size, work, notes
        self._images: torch.Tensor | None = None
        self._openvino: dict[str, Any] = {}  # converted once; NNCF quantizes a copy

    def images(self) -> torch.Tensor:
        if self._images is None:
            if self.cfg.calib_dir is None:
                raise ValueError("int8 needs calibration images: give a folder of images "
                                 "(calib_dir); a few hundred training images are enough")
            mean, std = self.normalization or normalization_of(self.model)
            self._images = calibration_images(self.cfg.calib_dir, self.cfg.calib_images,
                                              self.input_size[1:], self.cfg.seed, mean, std)
        return self._images

    def onnx_file(self, which: str) -> Path:
        """``resnets``: our model, BN folded. ``peer``: the reference model as exported."""
        from .onnx import export_onnx

        path = self.work / f"{which}.onnx"
        if not path.exists():
            source = self.model if which == "resnets" else self.reference
            export_onnx(source, path, self.input_size, fold_bn=which == "resnets",
                        exporter=self.cfg.exporter)
        return path

    def int8_file(self, which: str) -> Path:
        from .int8 import quantize_onnx

        path = self.work / f"{which}-int8.onnx"
        if not path.exists():
            quantize_onnx(self.onnx_file(which), path, self.images(),
                          preprocess_graph=which == "resnets")
        return path

    def openvino_model(self, which: str):  # -> openvino.Model
        """``resnets``: our conversion (BN folded, torch.export). ``peer``: the reference
        model through ``openvino.convert_model`` as its documentation shows."""
        if which not in self._openvino:
            if which == "resnets":
                self._openvino[which] = convert(self.model, self.input_size)
            else:
                ov = require_openvino()
                with quiet():
                    self._openvino[which] = ov.convert_model(
                        self.reference, example_input=sample_input(self.input_size))
        return self._openvino[which]

    def openvino_fn(self, which: str, int8: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        model = self.openvino_model(which)
        if int8:
            model = quantize_openvino(model, self.images())
        # the peer's int8 runs at OpenVINO's default precision, as a user's would
        exact = which == "resnets" or not int8
        compiled = compile_model(model, self.cfg.threads, exact=exact)
        if which == "peer" and int8:
            precision = compiled.get_property("INFERENCE_PRECISION_HINT")
            self.notes.append(f"the openvino-int8 peer runs its float ops at OpenVINO's default "
                              f"precision, here {precision.get_type_name()}")
        return OvRunner(compiled, in_chans=self.input_size[0])

    def ort_fn(self, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        from .onnx import OrtRunner, ort_session

        return OrtRunner(ort_session(path, self.cfg.threads), in_chans=self.input_size[0])

    def ours(self, backend: str) -> Callable[[torch.Tensor], torch.Tensor]:
        from .optimize import optimize

        if backend == "eager":
            return _torch_fn(self.model)
        if backend in ("optimized", "compiled", "bf16"):
            return _torch_fn(optimize(self.model, compile=backend == "compiled",
                                      bf16=backend == "bf16"))
        if backend == "onnxruntime":
            return self.ort_fn(self.onnx_file("resnets"))
        if backend in ("openvino", "openvino-int8"):
            return self.openvino_fn("resnets", int8=backend == "openvino-int8")
        if backend == "onnxruntime-int8":
            return self.ort_fn(self.int8_file("resnets"))
        raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")

    def peer(self, peer: str) -> Callable[[torch.Tensor], torch.Tensor]:
        if peer == "torchvision":
            return _torch_fn(self.reference)
        if peer == "onnxruntime":
            return self.ort_fn(self.onnx_file("peer"))
        if peer in ("openvino", "openvino-int8"):
            return self.openvino_fn("peer", int8=peer == "openvino-int8")
        if peer == "onnxruntime-int8":
            return self.ort_fn(self.int8_file("peer"))
        raise ValueError(f"unknown peer {peer!r}: expected one of {', '.join(PEERS)}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:200]


def _time_call(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def _measure(cases: list[_Case], cfg: BenchConfig, log: Callable[[str], None]) -> None:
    """Warm up, size each case's calls to ``min_time_s``, then time the interleaved repeats."""
    for case in cases:
        for _ in range(cfg.warmup):
            case.fn(case.x)
        one = _time_call(case.fn, case.x)
        case.calls = max(1, min(cfg.max_calls, math.ceil(cfg.min_time_s / max(one, 1e-6))))
    n = len(cases)
    for r in range(cfg.repeats):
        order = cases[r % n:] + cases[:r % n]
        if r % 2:
            order.reverse()
        for case in order:
            times = [_time_call(case.fn, case.x) for _ in range(case.calls)]
            case.latencies.extend(times)
            case.repeat_medians.append(float(np.median(times)))
        log(f"repeat {r + 1}/{cfg.repeats} done")


def _result(case: _Case, baseline: _Case, diff: float, agree: float) -> dict[str, Any]:
    lat = np.array(case.latencies)
    p50, p90 = float(np.median(lat)), float(np.percentile(lat, 90))
    return {
        "backend": case.label, "batch": case.batch,
        "images_per_s": case.batch / p50,
        "latency_ms_p50": p50 * 1e3, "latency_ms_p90": p90 * 1e3,
        "ratio_vs_torchvision": float(np.median(baseline.latencies)) / p50,
        "images_per_s_per_repeat": [case.batch / t for t in case.repeat_medians],
        # paired with the baseline's median in the same repeat: the noise both saw cancels
        "ratio_per_repeat": [b / t for b, t in zip(baseline.repeat_medians, case.repeat_medians,
                                                   strict=True)],
        "calls_per_repeat": case.calls,
        "max_abs_diff_vs_baseline": diff, "top1_agreement_vs_baseline": agree,
    }


def run_bench(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark of ``cfg``; returns the report ``resnets bench --json`` prints."""
    log = log or (lambda message: None)
    threads = cfg.threads or os.cpu_count() or 1
    cfg = replace(cfg, threads=threads)
    torch.set_num_threads(threads)
    spec = get_spec(cfg.model)
    normalization = None
    if cfg.weights is not None:
        clf = load_classifier(cfg.weights, cfg.model)
        model, pre = clf.model, clf.preprocessing
        normalization = (pre.mean, pre.std)
    else:
        model = build_model(cfg.model).eval()
    _, h, w = spec.input_size
    if cfg.image_size:
        h = w = cfg.image_size
    input_size = (getattr(model, "in_chans", 3), h, w)
    notes: list[str] = []
    twin = torchvision_twin(cfg.model, model)
    prefix = "torchvision" if twin is not None else "plain"
    reference = twin if twin is not None else model
    if twin is None:
        notes.append(f"torchvision has no {cfg.model}: the baseline and peers run the resnets "
                     f"model as it comes (plain:*; plain:eager is resnets:eager), so "
                     f"ratio_vs_torchvision is the ratio to plain:eager")

    skipped: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        build = _Builder(cfg, model, reference, input_size, Path(tmp), notes, normalization)
        fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            f"{prefix}:eager": build.peer("torchvision")}
        # without a twin, resnets:eager would time the baseline's very model a second time
        wanted = [(f"resnets:{b}", build.ours, b) for b in cfg.backends
                  if twin is not None or b != "eager"]
        wanted += [(f"{prefix}:{p}", build.peer, p) for p in cfg.compare if p != "torchvision"]
        for label, make, arg in wanted:
            log(f"preparing {label}")
            try:
                fns[label] = make(arg)
            except (ImportError, ValueError, FileNotFoundError, NotADirectoryError):
                raise
            except Exception as e:  # one broken backend should not lose the whole run
                skipped.append({"backend": label, "reason": _first_line(e)})
                log(f"skipping {label}: {_first_line(e)}")

    generator = torch.Generator().manual_seed(cfg.seed)
    cases, checks = [], {}
    for batch in cfg.batches:
        x = torch.randn((batch, *input_size), generator=generator)
        ref = fns[f"{prefix}:eager"](x)
        for label, fn in fns.items():
            try:
                out = fn(x)
            except Exception as e:  # e.g. torch.compile without a C++ compiler
                if label == f"{prefix}:eager":
                    raise
                skipped.append({"backend": label, "reason": _first_line(e)})
                continue
            checks[label, batch] = (float((out.float() - ref).abs().max()),
                                    float((out.argmax(1) == ref.argmax(1)).float().mean()))
            cases.append(_Case(label, batch, fn, x))
    log(f"timing {len(cases)} cases x {cfg.repeats} repeats, {threads} threads")
    _measure(cases, cfg, log)

    baselines = {c.batch: c for c in cases if c.label == f"{prefix}:eager"}
    results = [_result(c, baselines[c.batch], *checks[c.label, c.batch]) for c in cases]
    results.sort(key=lambda r: (r["batch"], -r["images_per_s"]))
    config = asdict(cfg)
    return {"model": cfg.model, "input_size": list(input_size),
            "baseline": f"{prefix}:eager", "config": config, "notes": notes,
            "skipped": skipped, "machine": machine_info(threads), "results": results}


def report_table(report: dict[str, Any]):  # -> rich.table.Table
    """The results as a table, one row per backend and batch, fastest first."""
    from rich.table import Table

    machine = report["machine"]
    table = Table(title=f"{report['model']} {'x'.join(map(str, report['input_size']))}, "
                        f"{machine['threads']} threads, {machine['cpu']}",
                  caption=f"ratio: to {report['baseline']} (median latencies, same run)")
    table.add_column("backend", no_wrap=True)
    for col in ("batch", "images/s", "p50 ms", "p90 ms", "ratio", "max |diff|"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        table.add_row(r["backend"], str(r["batch"]), f"{r['images_per_s']:.1f}",
                      f"{r['latency_ms_p50']:.1f}", f"{r['latency_ms_p90']:.1f}",
                      f"{r['ratio_vs_torchvision']:.2f}x",
                      f"{r['max_abs_diff_vs_baseline']:.1e}")
    return table


def print_report(report: dict[str, Any]) -> None:
    """The table, then the notes and skipped backends, on the terminal."""
    from rich.markup import escape

    from ..terminal import result_console

    console = result_console()
    console.print(report_table(report))
    for note in report["notes"]:  # messages may hold paths: text, not markup
        console.print(escape(f"note: {note}"))
    for skip in report["skipped"]:
        console.print(escape(f"skipped {skip['backend']}: {skip['reason']}"))
