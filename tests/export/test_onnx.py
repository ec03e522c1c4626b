import sys

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
