import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from resnets.cli import app
from resnets.export import export_named
from resnets.export.exported import is_exported_file, load_exported
from resnets.weights import load_classifier


@pytest.fixture(scope="module")
def bundled():
    return load_classifier("resnet20")


def _uint8_batch() -> torch.Tensor:
    return torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("suffix", [".onnx", ".xml"])
def test_uint8_export_runs_from_its_metadata_like_the_weights(bundled, tmp_path, suffix):
    pytest.importorskip("onnxruntime" if suffix == ".onnx" else "openvino")
    path = tmp_path / f"resnet20{suffix}"
    export_named("resnet20", path, weights="resnet20", uint8_input=True)
    exported = load_exported(path)
    assert exported.input_dtype == torch.uint8 and exported.name == "resnet20"
    assert exported.classes == bundled.classes and exported.preprocessing == bundled.preprocessing
    images = _uint8_batch()
    with torch.no_grad():
        reference = bundled.model(bundled.preprocessing.normalize(images))
    torch.testing.assert_close(exported.run(exported.prepare(images)), reference,
                               rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="takes uint8 images"):
        exported.run(images.float())


def test_float_export_is_normalised_before_it_runs(bundled, tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "resnet20.onnx"
    export_named("resnet20", path, weights="resnet20")
    exported = load_exported(path)
    assert exported.input_dtype == torch.float32
    images = _uint8_batch()
    with torch.no_grad():
        reference = bundled.model(bundled.preprocessing.normalize(images))
    torch.testing.assert_close(exported.run(exported.prepare(images)), reference,
                               rtol=0, atol=1e-4)


def test_uint8_metadata_says_what_the_input_is(tmp_path):
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "r20.onnx"
    export_named("resnet20", path, uint8_input=True)  # no weights: the default preprocessing
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["input"] == "uint8" and json.loads(props["preprocess"])["size"] == 32
    assert load_exported(path).classes == [str(i) for i in range(10)]


def test_a_file_without_preprocessing_is_refused(tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "bare.onnx"
    export_named("resnet20", path)
    with pytest.raises(ValueError, match="records no preprocessing"):
        load_exported(path)


def test_uint8_input_is_refused_for_other_formats(tmp_path):
    with pytest.raises(ValueError, match="onnx and openvino formats, not torch-export"):
        export_named("resnet20", tmp_path / "r20.pt2", uint8_input=True)


def test_exported_files_are_told_by_suffix(tmp_path):
    assert is_exported_file("m.onnx") and is_exported_file("m.XML")
    assert not is_exported_file("m.safetensors")
    with pytest.raises(FileNotFoundError, match="exported model not found"):
        load_exported(tmp_path / "none.onnx")


@pytest.mark.parametrize("name, content, message", [
    ("m.onnx", b"not onnx", "onnxruntime cannot load it as an ONNX model (InvalidProtobuf: "),
    ("m.xml", b"<net", "OpenVINO cannot read it as an IR with its .bin (Unable to read the "),
])
def test_cli_predict_with_a_damaged_exported_file_is_one_error_naming_it(
        tmp_path, monkeypatch, name, content, message):
    pytest.importorskip("onnxruntime" if name.endswith(".onnx") else "openvino")
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    Path(name).write_bytes(content)
    Path("m.bin").write_bytes(b"")  # an IR's weights, empty
    Image.new("RGB", (32, 32), (200, 40, 40)).save("red.png")
    result = CliRunner().invoke(app, ["predict", "--model", name, "red.png"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exc_info
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {name}: {message}"), errors
    assert "Traceback" not in result.output and not result.stdout
