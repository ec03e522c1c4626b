import pytest
import torch
from safetensors.torch import save_file

import resnets
from resnets.export import load_model, read_state_dict
from resnets.export.checkpoint import file_normalization


def test_weights_for_another_architecture_name_the_likely_one(tmp_path):
    path = tmp_path / "r20.safetensors"
    save_file(resnets.create_model("resnet20").state_dict(), str(path))
    with pytest.raises(ValueError) as info:
        load_model("resnet56", path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"weights {path} do not fit resnet56: 180 missing keys")
    assert message.endswith("the file looks like resnet20: pass --model resnet20")


def test_shape_mismatch_is_reported_with_both_shapes(tmp_path):
    path = tmp_path / "r18.pt"
    state = resnets.create_model("resnet18").state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match=r"1 shape mismatches \(e.g. layer1.0.conv1.weight: "
                                         r"file \[64, 64, 1, 1\], model \[64, 64, 3, 3\]\)"):
        load_model("resnet18", path)


def test_wrapper_prefixes_are_stripped_and_class_count_taken_from_the_file(tmp_path):
    model = resnets.create_model("resnet20", num_classes=7)
    state = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    del state["module._orig_mod.bn1.num_batches_tracked"]  # older checkpoints lack these
    torch.save({"model": state, "epoch": 3}, tmp_path / "ckpt.pth")
    loaded = load_model("resnet20", tmp_path / "ckpt.pth")
    assert loaded.num_classes == 7 and not loaded.training
    assert torch.equal(loaded.fc.weight, model.fc.weight)


def test_not_a_weights_file_is_a_value_error(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="cannot read .*notes.pt: truncated, damaged"):
        read_state_dict(path)


def test_recorded_preprocessing_gives_the_calibration_normalization(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(resnets.create_model("resnet20").state_dict(), str(path), metadata={
        "preprocess": '{"mean": [0.49, 0.48, 0.44], "std": [0.24, 0.24, 0.26], "size": 32, '
                      '"resize": 32}'})
    assert file_normalization(path) == ((0.49, 0.48, 0.44), (0.24, 0.24, 0.26))
