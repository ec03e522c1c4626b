import pytest
import torch
from typer.testing import CliRunner

import resnets
from resnets.cli import app
from resnets.export import export_model
from resnets.models.cifar import cifar_resnet
from resnets.weights.classifier import load_model
from tests.export.conftest import CIFAR_SIZE, randomize_bn

runner = CliRunner()


@pytest.fixture(scope="module")
def resnet8():
    """The smallest CIFAR ResNet (one block per stage, option A shortcuts): quick to trace."""
    return randomize_bn(cifar_resnet(8))


def test_torch_export_program_runs_at_other_batch_and_size(resnet8, tmp_path):
    report = export_model(resnet8, tmp_path / "r8.pt2", "torch-export", CIFAR_SIZE)
    assert report.max_abs_diff == pytest.approx(0.0, abs=1e-5)
    program = torch.export.load(str(tmp_path / "r8.pt2")).module()
    x = torch.randn(3, 3, 40, 27)
    with torch.no_grad():
        assert torch.allclose(program(x), resnet8(x), atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_file_loads_and_matches(resnet8, tmp_path):
    export_model(resnet8, tmp_path / "r8.pt", "torchscript", CIFAR_SIZE)
    scripted = torch.jit.load(str(tmp_path / "r8.pt"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scripted(x), resnet8(x), atol=1e-6)


def test_safetensors_round_trip_through_load_model(resnet20, tmp_path):
    path = tmp_path / "r20.safetensors"
    export_model(resnet20, path, "safetensors", CIFAR_SIZE, name="resnet20")
    back = load_model("resnet20", path)
    for key, value in resnet20.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_unknown_format_is_rejected_before_writing(resnet20, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_model(resnet20, tmp_path / "m.tflite", "tflite", CIFAR_SIZE)
    assert list(tmp_path.iterdir()) == []


def test_cli_export_writes_format_named_by_the_suffix(tmp_path):
    out = tmp_path / "resnet20.safetensors"
    result = runner.invoke(app, ["export", "--model", "resnet20", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (safetensors" in result.output
    assert "warning: no --weights" in result.stderr and "untrained" in result.stderr
    assert set(load_model("resnet20", out).state_dict()) == set(
        resnets.create_model("resnet20").state_dict())


def test_cli_export_onnx_reports_the_check(tmp_path):
    out = tmp_path / "resnet20.onnx"
    result = runner.invoke(app, ["export", "--model", "resnet20", "-o", str(out),
                                 "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert "max |diff| vs PyTorch" in result.output and out.stat().st_size > 1e6


def test_cli_export_bad_inputs_are_one_line_errors(tmp_path):
    for args, expected in [
        (["-o", str(tmp_path / "m.bin")], "cannot tell the format from 'm.bin'"),
        (["-o", str(tmp_path / "missing" / "m.onnx")], "does not exist"),
        (["-o", str(tmp_path / "m.pt2"), "--weights", str(tmp_path / "nope.safetensors")],
         "weights file not found"),
    ]:
        result = runner.invoke(app, ["export", "--model", "resnet20", *args])
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 1 and len(lines) == 1, result.output
        assert lines[0].startswith("error: ") and expected in lines[0]


def test_onnx_export_carries_classes_and_preprocessing_of_the_weights(tmp_path):
    import json

    import onnx

    from resnets.weights import load_classifier

    out = tmp_path / "resnet20.onnx"
    result = runner.invoke(app, ["export", "--model", "resnet20", "--weights", "resnet20",
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    clf = load_classifier("resnet20")
    assert props["model"] == "resnet20" and json.loads(props["classes"]) == clf.classes
    assert json.loads(props["preprocess"])["mean"] == list(clf.preprocessing.mean)


def test_safetensors_export_keeps_the_classes_and_preprocessing_of_the_weights(resnet20,
                                                                              tmp_path):
    """A safetensors export of trained weights loads as they do: their class names and
    preprocessing, not indices and an assumed preprocessing."""
    from resnets.export import export_named
    from resnets.weights import load_classifier
    from resnets.weights.preprocessing import Preprocessing
    from resnets.weights.state_dict_io import save_safetensors

    classes = [f"class{i}" for i in range(10)]
    pre = Preprocessing(resize=40, crop=36, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    trained = save_safetensors(resnet20.state_dict(), tmp_path / "trained.safetensors",
                               {"model": "resnet20", "classes": classes,
                                "preprocess": pre.to_metadata()})
    out = tmp_path / "exported.safetensors"
    export_named("resnet20", out, weights=trained)
    clf = load_classifier(out)
    assert clf.classes == classes and clf.preprocessing == pre and clf.notes == []
