import subprocess
import sys
import time

import pytest
import torch

import resnets

EXPECTED = {
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "plain18", "plain34",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2",
    "wide_resnet101_2", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet1202", "plain20", "plain32", "plain44", "plain56", "plain110",
}


def test_all_23_models_are_registered():
    assert set(resnets.list_models()) == EXPECTED
    assert len(resnets.list_models()) == 23


def test_list_models_pattern():
    assert resnets.list_models("plain*") == ["plain18", "plain34", "plain20", "plain32",
                                             "plain44", "plain56", "plain110"]
    assert resnets.list_models("wide_*") == ["wide_resnet50_2", "wide_resnet101_2"]


def test_create_model_passes_options():
    model = resnets.create_model("resnet20", num_classes=100)
    assert model.fc.out_features == 100
    assert isinstance(model, torch.nn.Module)


def test_unknown_name_lists_closest_names():
    with pytest.raises(ValueError, match="'resnet5'; did you mean resnet50, resnet56"):
        resnets.create_model("resnet5")
    with pytest.raises(ValueError, match="unknown model 'resnext50'; did you mean "
                                         "resnext50_32x4d"):
        resnets.create_model("resnext50")
    with pytest.raises(ValueError, match="unknown model 'wide'; did you mean wide_resnet50_2"):
        resnets.create_model("wide")


def test_import_is_light():
    code = "import sys, resnets; print('torch' in sys.modules)"
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert time.perf_counter() - start < 10  # torch alone takes seconds
