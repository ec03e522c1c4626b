"""Shared fixtures: the real data beside the checkout, and CI's rule that it must exist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The processes tests start (the CLI, torchrun's ranks, servers) run one torch thread, as the
# tests themselves do: on the 2-core machine two test workers, each waiting on a child that
# used both cores, made a 3-epoch training subprocess take 96 s instead of 30 (measured
# under -n 3). A test that wants more threads sets them itself.
os.environ["OMP_NUM_THREADS"] = "1"

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


def one_image_sr_ref(root: Path, image: str = "img_002", bench: str = "Set5",
                     scales: tuple[int, ...] = (2, 3, 4)) -> Path:
    """A ``matlab_ref``-shaped folder under ``root`` holding one image of ``bench`` (by
    default Set5's 288x288 bird, 1/7 of Set5's pixels) at each scale, for tests that
    check what a command says rather than its full-set numbers."""
    for scale in scales:
        src = shared_path("sr", "matlab_ref", bench, f"x{scale}")
        for part in ("HR", "LR"):
            (root / bench / f"x{scale}" / part).mkdir(parents=True, exist_ok=True)
            for f in (src / part).glob(f"{image}_*"):
                (root / bench / f"x{scale}" / part / f.name).write_bytes(f.read_bytes())
    return root
