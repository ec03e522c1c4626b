"""Fixtures the training tests share: a tiny synthetic ImageFolder tree, and a private
uint8 cache folder per test so no test reads another's decoded images."""

import pytest

from tests.synthetic import make_folder


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    make_folder(root, per_class=(24, 6))
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
