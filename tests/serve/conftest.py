"""Fixtures for the server tests: required extras, free ports, a running server process."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "images"


def require(module: str) -> None:
    """Skip without ``module`` locally; fail under CI (``make test`` installs it)."""
    try:
        __import__(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is missing under CI: install .[serve,browser]")
        pytest.skip(f"{module} not installed (pip install -e '.[serve,browser]')")


def chromium_path() -> str:
    """Debian's chromium; skipped without it locally, a failure under CI."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing under CI: apt-get install -y chromium")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return path


require("fastapi")
require("httpx")


@pytest.fixture(scope="module", autouse=True)
def _model_cache(tmp_path_factory) -> Iterator[None]:
    """The upscaler runs through the fastest backend installed: its converted or exported
    graphs go to a cache of this test session (shared by the server processes started, which
    inherit the environment), not the user's. Set per module (an autouse fixture comes before
    the module's other fixtures) and undone after it, so tests elsewhere that run later on
    this worker see the environment they would see alone."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNETS_CACHE", str(_session_cache(tmp_path_factory)))
        yield


def _session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "cache"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(width: int, height: int, seed: int = 0) -> bytes:
    """A smooth random RGB picture as PNG bytes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def example(name: str = "cat_0007.jpg") -> bytes:
    return (EXAMPLES / name).read_bytes()


# The upscaler the server tests load: the small bundled network. The default (the best
# bundled one, edsr_baseline_x234 with 11x the parameters) made the serve tests minutes
# slower; test_app.py checks that a server without --sr-model loads the default.
FAST_SR = "edsr_small_x234"

RUNNING_ON = re.compile(r"running on http://127\.0\.0\.1:(\d+)")


class ServerProcess:
    """``resnets serve`` in a child process on 127.0.0.1."""

    def __init__(self, *args: str, log: Path) -> None:
        self.args = args
        self.log = log
        self._log_file = None
        self._launch()

    def _launch(self) -> None:
        """Start the server on port 0: the system picks a free port at the bind, and the
        port is read from uvicorn's "running on" line (no window for another process to
        take a port found free a moment before)."""
        self.port = None
        self.url = None
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self._log_file = open(self.log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "resnets", "serve", "--host", "127.0.0.1", "--port", "0",
             *self.args], stdout=self._log_file, stderr=subprocess.STDOUT, env=env)

    def _read_port(self) -> None:
        found = RUNNING_ON.search(self.log.read_text(errors="replace"))
        if found:
            self.port = int(found.group(1))
            self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited ({self.proc.returncode}): "
                                     f"{self.log.read_text()[-2000:]}")
            if self.port is None:
                self._read_port()
            if self.port is not None:
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.3)
        raise AssertionError(f"server not ready in {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


@pytest.fixture(scope="session")
def upscaler_graphs(tmp_path_factory) -> None:
    """The tests' upscaler's graphs for every scale in the session's cache, made here once:
    a server process then reads them at start (seconds) instead of converting them (36 s
    for OpenVINO's three on 2 cores shared with other work), well inside ``wait_ready``."""
    from resnets.export.sr import load_sr_backend
    from resnets.models.sr import SUPPORTED_SCALES
    from resnets.weights.sr import get_sr_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNETS_CACHE", str(_session_cache(tmp_path_factory)))
        load_sr_backend("auto", get_sr_model(FAST_SR)[0], scales=SUPPORTED_SCALES)


@pytest.fixture
def server_factory(tmp_path: Path, upscaler_graphs: None) -> Iterator:
    """Start ``resnets serve ARGS...`` (with ``--sr-model FAST_SR`` unless ARGS choose the
    upscaler); every server started is stopped at the end."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        if not {"--sr-model", "--sr-weights"} & set(args):
            args = ("--sr-model", FAST_SR, *args)
        server = ServerProcess(*args, log=tmp_path / f"server{len(started)}.log")
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
