"""The tasks run models through the fast backends by default: OpenVINO's converted graphs go
to a cache of this test session, not the user's."""

import pytest


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
