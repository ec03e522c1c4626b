import sys
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

import resnets
from resnets.export import MissingExtraError, export_onnx, load_backend, ort_session
from resnets.export.onnx import OrtRunner
from tests.export.conftest import CIFAR_SIZE


def test_onnx_file_passes_checker_with_named_dynamic_axes(resnet20_onnx):
    path, result = resnet20_onnx
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert [n.op_type for n in graph.node].count("BatchNormalization") == 0
    assert result.exporter == "dynamo" and result.max_abs_diff <= 1e-4


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (5, 3, 40, 24), (2, 3, 33, 31)])
def test_onnxruntime_equals_pytorch_at_any_batch_and_size(resnet20, resnet20_onnx, shape):
    runner = OrtRunner(ort_session(resnet20_onnx[0], threads=1))
    x = torch.randn(shape)
    with torch.no_grad():
        ref = resnet20(x)
    assert (runner(x) - ref).abs().max() <= 1e-4


def test_legacy_exporter_also_verifies(resnet20, tmp_path):
    result = export_onnx(resnet20, tmp_path / "legacy.onnx", CIFAR_SIZE, exporter="legacy")
    assert result.exporter == "legacy" and result.max_abs_diff <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["legacy.onnx"]


class _Unexportable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(x)  # no ONNX operator for it in either exporter


def test_model_the_exporters_cannot_handle_is_one_error_and_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match="cannot export _Unexportable to ONNX") as info:
        export_onnx(_Unexportable(), tmp_path / "bad.onnx", CIFAR_SIZE)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message
    assert "dynamo exporter" in message and "legacy exporter" in message and "bessel" in message
    assert list(tmp_path.iterdir()) == []


def test_output_mismatch_fails_the_check_and_keeps_the_old_file(resnet20, tmp_path,
                                                                 monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous export")
    import resnets.export.onnx as onnx_module

    monkeypatch.setattr(onnx_module, "verify_onnx", lambda *a, **k: (0.5, 1e-4))
    with pytest.raises(ValueError, match="differs from PyTorch by 5.00e-01"):
        export_onnx(resnet20, target, CIFAR_SIZE, exporter="legacy")
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_missing_onnxruntime_says_which_extra_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    model = resnets.create_model("resnet20")
    with pytest.raises(MissingExtraError, match=r"pip install 'resnets\[onnx\]'") as info:
        load_backend("onnxruntime", model, input_size=CIFAR_SIZE)
    assert isinstance(info.value, ImportError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
    with pytest.raises(MissingExtraError):
        export_onnx(model, tmp_path / "m.onnx", CIFAR_SIZE)


def test_wrong_channel_count_at_onnxruntime_is_a_one_line_error(resnet20_onnx):
    runner = OrtRunner(ort_session(resnet20_onnx[0]))
    with pytest.raises(ValueError, match="expected a 3-channel input, got 1 channels"):
        runner(torch.randn(2, 1, 32, 32))


def _small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 4, 3, padding=1)).eval()


SMALL_SIZE = (3, 16, 16)


def count_exports(monkeypatch) -> list[int]:
    """Calls of :func:`export_onnx` behind the onnxruntime backend."""
    import resnets.export.onnx as onnx_module

    calls: list[int] = []
    original = onnx_module.export_onnx

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(onnx_module, "export_onnx", counted)
    return calls


def test_second_onnxruntime_load_reads_the_exported_graph_from_the_cache(monkeypatch,
                                                                         tmp_path):
    calls, model = count_exports(monkeypatch), _small_net()
    first = load_backend("onnxruntime", model, input_size=SMALL_SIZE, threads=1)
    second = load_backend("onnxruntime", model, input_size=SMALL_SIZE, threads=1)
    assert len(calls) == 1
    assert first.details["cached"] is False and second.details["cached"] is True
    assert second.details["cache_file"] == first.details["cache_file"]
    assert second.details["max_abs_diff"] <= 1e-4  # checked against PyTorch on a hit too
    entries = list((tmp_path / "cache" / "onnxruntime").iterdir())
    assert [p.name for p in entries] == [Path(first.details["cache_file"]).name]
    assert entries[0].name.startswith("sequential-fp32-") and entries[0].suffix == ".onnx"
    x = torch.randn(2, 3, 20, 12)
    assert torch.equal(first(x), second(x))


def test_changed_weights_make_a_new_onnxruntime_entry(monkeypatch, tmp_path):
    calls, model = count_exports(monkeypatch), _small_net()
    first = load_backend("onnxruntime", model, input_size=SMALL_SIZE, threads=1)
    with torch.no_grad():
        model[3].bias.add_(0.5)
    second = load_backend("onnxruntime", model, input_size=SMALL_SIZE, threads=1)
    assert len(calls) == 2 and second.details["cached"] is False
    assert second.details["cache_file"] != first.details["cache_file"]
    x = torch.randn(1, *SMALL_SIZE)
    with torch.no_grad():
        assert (second(x) - model(x)).abs().max() <= 1e-4  # the new weights, not the old
    assert len(list((tmp_path / "cache" / "onnxruntime").iterdir())) == 2


@pytest.mark.parametrize("damage", ["cut off", "other weights"])
def test_damaged_onnxruntime_entry_is_exported_again(monkeypatch, damage):
    calls, model = count_exports(monkeypatch), _small_net()
    entry = Path(load_backend("onnxruntime", model, input_size=SMALL_SIZE).details[
        "cache_file"])
    if damage == "cut off":
        entry.write_bytes(entry.read_bytes()[:300])
    else:  # a graph that loads and runs, but is not this model's
        export_onnx(_small_net(seed=1), entry, SMALL_SIZE)
    rebuilt = load_backend("onnxruntime", model, input_size=SMALL_SIZE)
    assert len(calls) == 2
    assert rebuilt.details["cached"] is False and rebuilt.details["cache_file"] == str(entry)
    again = load_backend("onnxruntime", model, input_size=SMALL_SIZE)
    assert again.details["cached"] is True and again.details["max_abs_diff"] <= 1e-4


def test_unwritable_onnxruntime_cache_still_gives_a_backend(monkeypatch, tmp_path):
    calls, model = count_exports(monkeypatch), _small_net()
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("RESNETS_CACHE", str(blocked))
    for _ in range(2):  # each run exports again, and only that
        backend = load_backend("onnxruntime", model, input_size=SMALL_SIZE)
        assert backend.details["cache_file"] is None
        assert "not-a-folder" in backend.details["cache_error"]
        assert backend(torch.randn(1, *SMALL_SIZE)).shape == (1, 4, 16, 16)
    assert len(calls) == 2 and blocked.read_text() == ""
