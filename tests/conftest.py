"""Shared fixtures: the real data beside the checkout, and CI's rule that it must exist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skips locally when absent, fails under CI."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"shared data missing under CI: {path}")
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seeded, and one torch thread: on the shared 2-core machine many small ops on two
    threads crawl (about 10x slower measured here) while a second process runs."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
