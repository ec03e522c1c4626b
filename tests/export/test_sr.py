"""Super-resolution backends: one graph per scale, and PSNR parity with fp32 eager on Set5."""

from __future__ import annotations

import pytest
import torch

from resnets.devices import cpu_has_native_bf16
from resnets.export import sr as export_sr
from resnets.export.sr import SRBackend, load_sr_backend, resolve_sr_backend
from resnets.models.sr import create_sr_model
from resnets.tasks.sr_eval import evaluate_sr
from resnets.weights.sr import get_sr_model
from tests.conftest import shared_path

# What each backend needs installed; a missing extra skips its tests.
NEEDS = {"torch": (), "bf16": (), "onnxruntime": ("onnx", "onnxruntime", "onnxscript"),
         "openvino": ("openvino",)}
PARITY_DB = 0.01  # issue #18: every backend within 0.01 dB of fp32 eager on Set5


def _require(kind: str) -> None:
    for module in NEEDS[kind]:
        pytest.importorskip(module, reason=f"{module} not installed: the {kind} backend "
                                           "needs its extra")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """The runtimes' converted and exported graphs go to a cache of this test session, not
    the user's."""
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_resolve_picks_the_fastest_exact_backend_installed(monkeypatch):
    assert resolve_sr_backend("eager") == "torch"
    assert resolve_sr_backend("bf16") == "bf16"
    assert resolve_sr_backend("auto", "cuda") == "torch"
    monkeypatch.setattr(export_sr, "installed", lambda module: True)
    assert resolve_sr_backend("auto") == export_sr.EXACT_BY_SPEED[0][0]
    monkeypatch.setattr(export_sr, "installed", lambda module: module != "openvino")
    assert resolve_sr_backend("auto") == "onnxruntime"
    monkeypatch.setattr(export_sr, "installed", lambda module: False)
    assert resolve_sr_backend("auto") == "torch"
    with pytest.raises(ValueError, match="unknown super-resolution backend 'int8'"):
        resolve_sr_backend("int8")


def test_graphs_are_made_per_scale_on_first_use():
    model = create_sr_model("edsr_tiny", scales=(2, 3)).eval()
    backend = load_sr_backend("torch", model, scales=(3,))
    assert isinstance(backend, SRBackend) and backend.kind == "torch"
    assert list(backend.runners) == [3]  # asked for now; x2 waits until it is used
    with torch.inference_mode():
        x = torch.rand(1, 3, 21, 30)
        assert torch.equal(backend(x, 2), model(x, 2))
    assert sorted(backend.runners) == [2, 3]
    assert backend.scales == (2, 3) and backend.config.in_chans == 3


def test_backend_refuses_a_scale_it_cannot_guess():
    backend = load_sr_backend("torch", create_sr_model("edsr_tiny", scales=(2, 3)))
    with pytest.raises(ValueError, match=r"serves scales \[2, 3\]: pass scale="):
        backend(torch.rand(1, 3, 8, 8))
    single = load_sr_backend("torch", create_sr_model("edsr_tiny"))  # x2 only
    assert single(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)


def test_onnxruntime_graphs_per_scale_come_from_the_cache_on_the_second_load(monkeypatch,
                                                                            tmp_path):
    """What ``upscale --backend onnxruntime`` and ``sr-eval`` do at start: a second run reads
    the graph of each scale from the cache instead of exporting it again."""
    _require("onnxruntime")
    import resnets.export.onnx as onnx_module

    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    exports: list[int] = []  # the scale of each graph exported
    original = onnx_module.export_onnx

    def counted(graph, *args, **kwargs):
        exports.append(graph.scale)
        return original(graph, *args, **kwargs)

    monkeypatch.setattr(onnx_module, "export_onnx", counted)
    model = create_sr_model("edsr_tiny", scales=(2, 3)).eval()
    first = load_sr_backend("onnxruntime", model, threads=1, scales=(2, 3))
    second = load_sr_backend("onnxruntime", model, threads=1, scales=(2, 3))
    assert exports == [2, 3]  # once per scale, on the first load only
    files = {s: first.details[s]["cache_file"] for s in (2, 3)}
    assert files[2] != files[3]  # the scale is part of the key
    for s in (2, 3):
        assert first.details[s]["cached"] is False and second.details[s]["cached"] is True
        assert second.details[s]["cache_file"] == files[s]
        assert second.details[s]["max_abs_diff"] <= 1e-4
    x = torch.rand(1, 3, 13, 9)
    with torch.inference_mode():
        assert torch.equal(first(x, 2), second(x, 2)) and torch.equal(first(x, 3), second(x, 3))
    with torch.no_grad():  # changed weights: new entries, the old ones not reused
        next(model.parameters()).add_(0.01)
    changed = load_sr_backend("onnxruntime", model, threads=1, scales=(2,))
    assert exports == [2, 3, 2] and changed.details[2]["cached"] is False
    assert changed.details[2]["cache_file"] not in files.values()


@pytest.fixture(scope="module")
def fast_model() -> torch.nn.Module:
    return get_sr_model("edsr_small_x234")[0]


@pytest.fixture(scope="module")
def bundled_backends(fast_model) -> dict:
    """The fast bundled model behind each backend, made once per kind (exporting a graph
    takes seconds): a cache filled by :func:`_backend`."""
    return {}


def _backend(kind: str, model, cache: dict) -> SRBackend:
    _require(kind)
    if kind not in cache:
        cache[kind] = load_sr_backend(kind, model, threads=2)
    return cache[kind]


@pytest.mark.parametrize("kind", list(NEEDS))
def test_backend_matches_eager_on_a_batch_of_odd_size(kind, fast_model, bundled_backends):
    backend = _backend(kind, fast_model, bundled_backends)
    assert backend.kind == kind
    atol = 2e-2 if kind == "bf16" else 1e-4
    x = torch.rand(2, 3, 13, 9)
    with torch.inference_mode():
        out, ref = backend(x, 3), fast_model(x, 3)
    assert out.shape == ref.shape == (2, 3, 39, 27)
    assert (out - ref).abs().max() <= atol
    if kind in ("onnxruntime", "openvino"):  # checked against PyTorch when made
        assert backend.details[3]["max_abs_diff"] <= 1e-4


@pytest.fixture(scope="module")
def set5_reference(fast_model) -> dict[int, list[float]]:
    """Per-image Set5 PSNR of the fast bundled model, fp32 eager, at x2/x3/x4."""
    return {s: [i.psnr for i in evaluate_sr(
        fast_model, shared_path("sr", "matlab_ref", "Set5", f"x{s}"), s).images]
        for s in (2, 3, 4)}


# bf16 runs emulated on CPUs without native bf16 (AVX2 only: about 12x slower than fp32):
# there x2 alone took 60 s and x4 16 s, so make test keeps x4 (the same code path) on a CPU
# with bf16 instructions and none where it is emulated (the odd-batch test above still runs
# bf16 against eager there); -m slow runs all.
_SLOW_BF16 = pytest.mark.slow
PARITY_CASES = [pytest.param(kind, scale, marks=_SLOW_BF16 if kind == "bf16" and (
                    scale != 4 or not cpu_has_native_bf16()) else ())
                for kind in ("bf16", "onnxruntime", "openvino") for scale in (2, 3, 4)]


@pytest.mark.parametrize(("kind", "scale"), PARITY_CASES)
def test_psnr_parity_with_fp32_eager_on_set5(kind, scale, fast_model, bundled_backends,
                                             set5_reference):
    """The issue's bar: each backend's Set5 PSNR within 0.01 dB of fp32 eager at every
    scale (measured: onnxruntime and openvino within 0.0001 dB, bf16 within 0.002 dB)."""
    backend = _backend(kind, fast_model, bundled_backends)
    result = evaluate_sr(backend, shared_path("sr", "matlab_ref", "Set5", f"x{scale}"), scale)
    assert result.backend == kind  # the evaluation ran through it, and says so
    ours, reference = [i.psnr for i in result.images], set5_reference[scale]
    assert len(ours) == len(reference) == 5
    mean_diff = sum(ours) / 5 - sum(reference) / 5
    assert abs(mean_diff) <= PARITY_DB, f"{kind} x{scale}: {mean_diff:+.4f} dB"
    assert max(abs(a - b) for a, b in zip(ours, reference, strict=True)) <= 5 * PARITY_DB
