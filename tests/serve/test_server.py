"""``resnets serve`` as a real process on 127.0.0.1: over the socket, and its SIGTERM."""

from __future__ import annotations

import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from resnets.serve.metrics import parse_samples

from .conftest import example, png


def test_the_cli_serves_the_contract_over_a_socket(server_factory):
    server = server_factory("--queue-size", "32", "--batch-wait-ms", "2",
                            "--batch-wait-mode", "fixed")
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.post("/v1/classify", files={"file": ("cat.jpg", example(), "image/jpeg")})
        assert r.status_code == 200 and r.json()["top"][0]["class"] == "cat"
        r = c.post("/v1/upscale", params={"scale": 3},
                   files={"file": ("p.png", png(20, 10), "image/png")})
        assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
        r = c.post("/v1/classify", files={"file": ("empty.png", b"", "image/png")})
        assert r.status_code == 422 and r.json()["error"]
        assert "resnets_requests_total" in c.get("/metrics").text
        assert "<html" in c.get("/").text


def test_two_workers_share_the_port_and_stop_with_the_server(server_factory):
    """The models load once before the workers start (a wrong --model is one line), each
    worker serves (eight requests over fresh connections all answered), and SIGTERM stops
    the parent and both workers: none is left behind."""
    import re

    server = server_factory("--workers", "2")

    def classify(_: int) -> int:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            r = c.post("/v1/classify", files={"file": ("cat.jpg", example(), "image/jpeg")})
            return r.status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(classify, range(8))) == [200] * 8
    workers = [int(p) for p in re.findall(r"Started server process \[(\d+)\]",
                                          server.log.read_text())]
    assert len(workers) == 2
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) in (0, -signal.SIGTERM)  # not a crash (-SIGSEGV)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], server.log.read_text()[-2000:]


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    from pathlib import Path

    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_wrong_model_is_one_line_and_exit_1(tmp_path, workers):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "resnets", "serve", "--model", "resnet7",
                          "--workers", workers], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.startswith("error:") and "Traceback" not in out.stderr


def _serve_without_models(monkeypatch, *args: str):
    """``resnets serve ARGS`` in this process, where loading a model or starting uvicorn
    fails the test: what it checks must come before both."""
    import uvicorn
    from typer.testing import CliRunner

    from resnets.cli import app
    from resnets.serve import models, server

    def never(*args, **kwargs):
        raise AssertionError("reached a model load or uvicorn: the address was not checked")

    monkeypatch.setattr(models, "load_models", never)
    monkeypatch.setattr(server, "warm_model_cache", never)
    monkeypatch.setattr(uvicorn, "run", never)
    return CliRunner().invoke(app, ["serve", *args], catch_exceptions=False)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line_before_any_model_loads(monkeypatch, workers):
    """Before, the models loaded (seconds) and then uvicorn logged six lines and exited 3."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        out = _serve_without_models(monkeypatch, "--port", str(port), "--workers", workers)
    assert out.exit_code == 1, out.output
    assert out.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: address already in use (another server? "
        "choose another port)"]
    assert out.stdout == ""


def test_an_unknown_host_is_one_line_naming_it(monkeypatch):
    out = _serve_without_models(monkeypatch, "--host", "999.1.1.1", "--port", "8123")
    assert out.exit_code == 1, out.output
    assert out.stderr.splitlines() == [
        "error: cannot listen on 999.1.1.1:8123: unknown host (expected an IP address or a "
        "name this machine resolves)"]


def test_a_free_port_passes_the_check_and_stays_free():
    """The check binds and lets go: uvicorn (here a plain socket) can bind the port after it."""
    import socket

    from resnets.serve.server import check_can_listen

    from .conftest import free_port

    port = free_port()
    for workers in (1, 2):
        check_can_listen("127.0.0.1", port, workers)
        with socket.socket() as after:
            after.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            after.bind(("127.0.0.1", port))
            after.listen()


def _upscale_lane(url: str) -> tuple[float, float]:
    """The upscale lane's queue depth and the requests it has started."""
    samples = parse_samples(httpx.get(f"{url}/metrics", timeout=10).text)
    return (samples.get('resnets_queue_depth{lane="upscale"}', 0.0),
            samples.get('resnets_batch_size_sum{lane="upscale"}', 0.0))


def test_sigterm_answers_the_requests_in_flight_then_exits(server_factory):
    server = server_factory()
    picture = png(400, 400)  # about a second each: the four arrive while the first runs

    def upscale() -> int:
        r = httpx.post(f"{server.url}/v1/upscale", params={"scale": 4}, timeout=120,
                       files={"file": ("p.png", picture, "image/png")})
        return r.status_code

    _, before = _upscale_lane(server.url)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(upscale) for _ in range(4)]
        # wait until all four are inside the server (a request still being sent when the
        # signal comes is refused by uvicorn, rightly) and some wait behind a running one
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            depth, started = _upscale_lane(server.url)
            started -= before
            if depth >= 1 and depth + started >= 4:
                break
            time.sleep(0.02)
        assert depth >= 1 and depth + started >= 4, \
            f"never all four in with one waiting (depth {depth}, started {started})"
        server.proc.send_signal(signal.SIGTERM)
        codes = [f.result() for f in futures]
    assert codes == [200] * 4
    # uvicorn re-raises the signal once it has shut down cleanly: exit by SIGTERM, or 0
    assert server.proc.wait(60) in (0, -signal.SIGTERM)
    log = server.log.read_text()
    assert "Shutting down" in log and "Finished server process" in log


@pytest.mark.parametrize("workers", [1, 2])
def test_graceful_shutdown_waits_a_finite_configured_time(monkeypatch, workers):
    """SIGTERM waits for the requests in flight at most ``shutdown_timeout_s`` (a client
    that sends half a body and stalls would otherwise hold the shutdown for ever)."""
    import math

    import uvicorn

    from resnets.serve import models, server
    from resnets.serve.config import ServeConfig

    options: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: options.update(kw))
    monkeypatch.setattr(models, "load_models", lambda config: None)
    monkeypatch.setattr(server, "warm_model_cache", lambda config: None)
    monkeypatch.setattr(server, "check_can_listen", lambda *args: None)  # 8000 may be taken
    server.serve(ServeConfig(workers=workers))
    assert options["timeout_graceful_shutdown"] == ServeConfig().shutdown_timeout_s == 30
    server.serve(ServeConfig(workers=workers, shutdown_timeout_s=2.5))
    assert options["timeout_graceful_shutdown"] == 2.5
    with pytest.raises(ValueError, match="shutdown_timeout_s must be > 0 and finite"):
        ServeConfig(shutdown_timeout_s=math.inf)
    from typer.testing import CliRunner

    from resnets.cli import app
    cli = CliRunner().invoke(app, ["serve", "--workers", str(workers),
                                   "--shutdown-timeout-s", "4"])
    assert cli.exit_code == 0, cli.output
    assert options["timeout_graceful_shutdown"] == 4


CHILD_OF_A_DYING_PARENT = r"""
import multiprocessing, sys, time
from concurrent.futures import ProcessPoolExecutor
from resnets.serve.server import die_with_parent

def pid_then_wait():
    import os
    print(os.getpid(), flush=True)
    time.sleep(60)

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent)
    pool.submit(pid_then_wait)
    time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_the_model_loading_child_dies_with_the_server(tmp_path):
    """SIGTERM to `serve --workers N` while its models loaded left the loading child on."""
    import subprocess

    script = tmp_path / "parent.py"
    script.write_text(CHILD_OF_A_DYING_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()  # not even a chance to clean up
    parent.wait(30)
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)
