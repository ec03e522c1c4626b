"""Fixtures shared by the export tests: a ResNet-20 whose BN layers do something, its ONNX
file (exported once per session: the dynamo exporter takes seconds), real CIFAR images, and
a fresh model cache in every test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import resnets
from resnets.export.int8 import calibration_images
from tests.conftest import shared_path

CIFAR_SIZE = (3, 32, 32)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial statistics and affine parameters, so folding them matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
    return model.eval()


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Converted and quantized models go to a fresh cache folder in every test, never
    ~/.cache."""
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(resnets.create_model("resnet20"))


@pytest.fixture(scope="session")
def resnet20_onnx(resnet20, tmp_path_factory) -> tuple[Path, float]:
    """(path, max |diff|) of resnet20 exported with the default (dynamo) exporter."""
    from resnets.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "resnet20.onnx"
    result = export_onnx(resnet20, path, CIFAR_SIZE)
    return path, result


@pytest.fixture(scope="session")
def cifar_train() -> torch.Tensor:
    """64 preprocessed CIFAR-10 training images: calibration data."""
    return calibration_images(shared_path("cifar10", "train"), 64, (32, 32), seed=0)


@pytest.fixture(scope="session")
def cifar_test() -> torch.Tensor:
    """64 preprocessed CIFAR-10 test images: held out from calibration."""
    return calibration_images(shared_path("cifar10", "test"), 64, (32, 32), seed=1)
