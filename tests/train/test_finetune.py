"""Fine-tuning from pretrained weights: which head is kept, which starts at zero."""

import logging
import os

import pytest
import torch

from resnets.train import Trainer, paper_recipe
from tests.synthetic import read_weights


def cfg(data, out, **kw):
    base = {"model": "resnet20", "data": str(data), "out": str(out), "epochs": 1,
            "batch_size": 8, "lr": 0.05, "amp": "none", "val_fraction": 0.25,
            "channels_last": False, "seed": 0}
    return paper_recipe(**{**base, **kw})


def renamed(src, dst, names):
    """``src``'s class folders linked under new class names (same images, same count)."""
    for split in ("train", "test"):
        (dst / split).mkdir(parents=True)
        for old, new in zip(sorted(os.listdir(src / split)), names, strict=True):
            os.symlink(src / split / old, dst / split / new)
    return dst


@pytest.fixture
def source(tiny_data, tmp_path):
    Trainer(cfg(tiny_data, tmp_path / "src"), quiet=True).fit()
    return tmp_path / "src" / "model.safetensors"


def test_the_head_is_kept_when_the_classes_are_the_same(tiny_data, source, tmp_path):
    t = Trainer(cfg(tiny_data, tmp_path / "ft", pretrained=str(source)), quiet=True)
    state, _ = read_weights(source)
    assert torch.equal(t.model.fc.weight.cpu(), state["fc.weight"])
    assert torch.equal(t.model.fc.bias.cpu(), state["fc.bias"])


def test_a_head_for_other_classes_of_the_same_count_starts_at_zero(tiny_data, source, tmp_path,
                                                                 caplog):
    """Same shape, other class names: the source task's head would give confident wrong
    answers; it starts at zero instead, and the backbone is still loaded."""
    other = renamed(tiny_data, tmp_path / "other", ["x", "y", "z"])
    with caplog.at_level(logging.WARNING):
        t = Trainer(cfg(other, tmp_path / "ft", pretrained=str(source)), quiet=True)
    assert "trained on other classes" in caplog.text
    state, _ = read_weights(source)
    assert t.model.fc.weight.abs().sum() == 0 and t.model.fc.bias.abs().sum() == 0
    assert torch.equal(t.model.conv1.weight.cpu(), state["conv1.weight"])
    t.fit()  # and it learns from there
    assert t.model.fc.weight.abs().sum() > 0


def test_a_head_of_another_size_starts_at_zero(tiny_data, source, tmp_path):
    two = tmp_path / "two"
    for split in ("train", "test"):
        (two / split).mkdir(parents=True)
        for c in ("a", "b"):
            os.symlink(tiny_data / split / c, two / split / c)
    t = Trainer(cfg(two, tmp_path / "ft", pretrained=str(source)), quiet=True)
    assert t.model.fc.weight.shape == (2, 64)
    assert t.model.fc.weight.abs().sum() == 0 and t.model.fc.bias.abs().sum() == 0


def test_without_pretrained_weights_the_head_keeps_its_initialisation(tiny_data, tmp_path):
    t = Trainer(cfg(tiny_data, tmp_path / "scratch"), quiet=True)
    assert t.model.fc.weight.abs().sum() > 0
