import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data.io import read_rgb
from resnets.data.prefetch import Prefetch, can_fork
from resnets.data.stream import image_batches
from resnets.weights.preprocessing import Preprocessing, cifar_default
from tests.synthetic import make_hostile_inputs

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux",
                                reason="the prefetch child is forked (Linux only)")


@pytest.fixture
def fork_here(monkeypatch):
    """Let Prefetch fork this test process even where earlier tests left threads behind
    (a runtime's callback threads count as Python threads); `resnets predict` forks before
    any thread exists (tests/test_cli.py runs it for real)."""
    from resnets.data import prefetch

    monkeypatch.setattr(prefetch, "can_fork", lambda: True)


def _mixed_folder(root: Path) -> list[Path]:
    """Small RGB JPEGs and PNGs among every hostile input, and a 600 px JPEG."""
    files = make_hostile_inputs(root)
    rng = np.random.default_rng(1)
    paths = list(files.values())
    for i in range(12):
        path = root / f"{i:02d}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(rng.integers(0, 256, (32, 32 + i, 3), dtype=np.uint8)).save(path)
        paths.insert(2 * i, path)
    big = root / "big.jpg"
    Image.fromarray(rng.integers(0, 256, (600, 500, 3), dtype=np.uint8)).save(big)
    return [*paths, big]


def _process_state(pid: int) -> str | None:
    """``R``, ``S``, ``Z`` ... of a process, None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def _ended(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _process_state(pid) in (None, "Z"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_and_errors_are_the_same_with_and_without_the_child(fork_here, tmp_path, workers):
    paths = _mixed_folder(tmp_path)
    pre = Preprocessing(resize=32, crop=32)
    plain = list(image_batches(paths, pre, batch_size=5, workers=workers))
    with Prefetch(paths, min_files=1) as prefetched:
        assert prefetched.pid is not None
        taken = [prefetched.take(i, pre.resize) is not None for i in range(len(paths))]
        early = list(image_batches(paths, pre, batch_size=5, workers=workers,
                                   prefetched=prefetched))
    assert sum(taken) == 12 + 4  # the small files and the 4 awkward good ones
    assert not taken[-1]  # above max_side: left to the pipeline
    assert [b.paths for b in early] == [b.paths for b in plain]
    assert [b.errors for b in early] == [b.errors for b in plain]
    assert [b.sizes for b in early] == [b.sizes for b in plain]
    assert len([e for b in plain for e in b.errors]) == 5
    for a, b in zip(early, plain, strict=True):
        assert (a.images is None and b.images is None) or torch.equal(a.images, b.images)


def test_a_jpeg_the_pipeline_decodes_reduced_is_not_taken_from_the_child(fork_here, tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 800, 3), np.uint8)
                    ).save(path)
    with Prefetch([path], max_side=1000, min_files=1) as prefetched:
        assert prefetched.take(0, min_side=32) is None  # read_rgb decodes it at 1/4
        full = prefetched.take(0, min_side=100)          # 400 / 600 px: at full size
        assert full is not None and full.flags.writeable
        assert torch.equal(torch.from_numpy(full).permute(2, 0, 1),
                           read_rgb(path, min_side=100))


def test_the_child_stops_at_the_byte_limit_and_the_rest_is_read(fork_here, tmp_path):
    paths = _mixed_folder(tmp_path)[:12]
    with Prefetch(paths, max_bytes=3 * 32 * 40 * 3, min_files=1) as prefetched:
        taken = [prefetched.take(i) is not None for i in range(len(paths))]
        batches = list(image_batches(paths, cifar_default(), 4, 0, prefetched=prefetched))
    assert 1 <= sum(taken) <= 3 and taken.index(False) + taken[::-1].index(True) > 0
    plain = list(image_batches(paths, cifar_default(), 4, 0))
    assert all(torch.equal(a.images, b.images) for a, b in zip(batches, plain, strict=True))


def test_no_child_for_few_files_or_with_threads_running(tmp_path):
    paths = _mixed_folder(tmp_path)
    with Prefetch(paths, min_files=len(paths) + 1) as prefetched:
        assert prefetched.pid is None and prefetched.take(0) is None
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        assert not can_fork()
        with Prefetch(paths, min_files=1) as prefetched:
            assert prefetched.pid is None
    finally:
        release.set()
        thread.join()


def test_no_shared_memory_means_no_child_and_the_same_batches(fork_here, tmp_path,
                                                             monkeypatch):
    from resnets.data import prefetch

    def refuse(*args):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(prefetch, "mmap", SimpleNamespace(mmap=refuse))  # Pillow keeps its own
    paths = _mixed_folder(tmp_path)
    with Prefetch(paths, min_files=1) as prefetched:
        assert prefetched.pid is None
        batches = list(image_batches(paths, cifar_default(), 8, 0, prefetched=prefetched))
    assert [b.paths for b in batches] == [b.paths for b in image_batches(paths, cifar_default(),
                                                                         8, 0)]


# A child with seconds of work: one small JPEG, listed many times.
_SLOW_CHILD = """
import os, sys, time
from PIL import Image
from resnets.data.prefetch import Prefetch
Image.new("RGB", (32, 32), (1, 2, 3)).save(sys.argv[1])
prefetched = Prefetch([sys.argv[1]] * 200_000)
pid = prefetched.pid
print(pid, flush=True)
"""


def _start(code: str, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "x.jpg")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    child = int(proc.stdout.readline())
    assert _process_state(child) not in (None, "Z")  # working
    return proc, child


def test_an_error_in_the_parent_stops_and_reaps_the_child(tmp_path):
    code = _SLOW_CHILD + """
try:
    with prefetched:
        time.sleep(0.3)
        raise ValueError("the model did not load")
except ValueError:
    pass
try:
    os.waitpid(pid, os.WNOHANG)
except ChildProcessError:
    print("reaped", flush=True)
time.sleep(30)
"""
    proc, child = _start(code, tmp_path)
    try:
        started = time.monotonic()
        assert proc.stdout.readline().strip() == "reaped"
        assert time.monotonic() - started < 10.0  # stopped, not through its 20 s of work
        assert _process_state(child) is None  # not even a zombie, the parent still alive
    finally:
        proc.kill()
        proc.wait()


def test_the_child_ends_when_its_parent_is_killed(tmp_path):
    proc, child = _start(_SLOW_CHILD + "time.sleep(30)\n", tmp_path)
    proc.kill()
    proc.wait()
    assert _ended(child, within=10.0)  # it had 200,000 files (over 20 s) to go


def test_ctrl_c_ends_parent_and_child(tmp_path):
    code = _SLOW_CHILD + "with prefetched:\n    time.sleep(30)\n"
    proc, child = _start(code, tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends to the foreground group
    assert proc.wait(timeout=10) != 0 and "KeyboardInterrupt" in proc.stderr.read()
    assert _process_state(child) is None  # ended and reaped by its parent


def test_no_child_once_a_library_with_thread_pools_is_loaded():
    """The CLI forks before it imports torch; a call in a process that has loaded torch,
    onnxruntime or OpenVINO (whose pool threads may hold a lock at the fork, locked in the
    child for ever: a hang) reads without a child."""
    code = ("import sys\nfrom resnets.data.prefetch import can_fork\nprint(can_fork())\n"
            "import torch\nprint(can_fork())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "False"]


def test_a_stuck_child_is_killed_and_the_files_are_read_here(fork_here, tmp_path,
                                                              monkeypatch):
    """A child that never reports (as one deadlocked at the fork would) does not hang the
    parent: after STALL_S it is killed, take() says "read it yourself", close() returns."""
    from resnets.data import prefetch

    monkeypatch.setattr(prefetch, "STALL_S", 0.5)
    monkeypatch.setattr(prefetch, "_decode_ahead", lambda *args: time.sleep(600))
    paths = _mixed_folder(tmp_path)
    fetch = prefetch.Prefetch(paths, min_files=1)
    assert fetch.pid is not None
    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match="made no progress"):
        assert fetch.take(0) is None
    fetch.close()
    assert time.monotonic() - start < 30
    assert fetch.pid is None


def test_closing_before_any_take_does_not_wait_for_a_stuck_child(fork_here, tmp_path,
                                                                 monkeypatch):
    """The model fails to load (or Ctrl-C) before anything was taken: close() gives a child
    that never sees the stop flag END_WAIT_S, then kills it."""
    from resnets.data import prefetch

    monkeypatch.setattr(prefetch, "END_WAIT_S", 0.5)
    monkeypatch.setattr(prefetch, "_decode_ahead", lambda *args: time.sleep(600))
    fetch = prefetch.Prefetch(_mixed_folder(tmp_path), min_files=1)
    child = fetch.pid
    assert child is not None
    start = time.monotonic()
    fetch.close()
    assert time.monotonic() - start < 10
    assert _process_state(child) is None  # killed and reaped
