"""Fixtures for the weights tests: a private torch hub cache, an HTTP server on 127.0.0.1
that serves checkpoint bytes the tests write (and misbehaves on request), and extra
weight records through the bundled-records hook."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from resnets.weights import records


@pytest.fixture(autouse=True)
def _one_thread():
    """The models here are tiny: one thread is fastest, and on a busy machine two threads
    that spin-wait on each other make a 20 ms forward pass take seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch) -> Path:
    """Every weights test gets its own empty cache; nothing reaches the user's."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("RESNETS_OFFLINE", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def cache(torch_home) -> Path:
    """torch hub's checkpoint folder under the test's TORCH_HOME."""
    return torch_home / "hub" / "checkpoints"


def checkpoint_bytes(state: dict, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def hashed_name(stem: str, payload: bytes, suffix: str = ".pth") -> str:
    """torchvision's naming: ``stem-<first 8 hex digits of the sha256>.pth``."""
    return f"{stem}-{hashlib.sha256(payload).hexdigest()[:8]}{suffix}"


@dataclass
class Served:
    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)  # ok, 500, truncate, hang, stall
    requests: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    base: str = ""

    def add(self, name: str, payload: bytes, mode: str = "ok") -> str:
        self.files[name] = payload
        self.modes[name] = mode
        return f"{self.base}/{name}"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        served: Served = self.server.served  # type: ignore[attr-defined]
        name = self.path.lstrip("/")
        served.requests.append(name)
        body, mode = served.files.get(name), served.modes.get(name, "ok")
        if body is None:
            self.send_error(404)
            return
        if mode == "500":
            self.send_error(500, "Internal Server Error")
            return
        if mode == "hang":  # accept the request, never answer
            served.release.wait(10)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate":  # promise the whole file, send half, close
            self.wfile.write(body[: len(body) // 2])
            return
        if mode == "stall":  # send half, then go silent
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            served.release.wait(10)
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 in a thread; ``server.add(name, bytes, mode)`` -> URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    served = Served(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.served = served  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield served
    served.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def extra_records(tmp_path, monkeypatch):
    """Add records through the bundled-records hook: ``extra_records([dict, ...])``."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    monkeypatch.setattr(records, "BUNDLED_DIR", folder)
    records.all_records.cache_clear()

    def add(entries: list[dict]) -> Path:
        (folder / "records.json").write_text(json.dumps(entries))
        records.all_records.cache_clear()
        return folder

    yield add
    records.all_records.cache_clear()


def record_dict(model: str, tag: str, url: str, sha256: str, **extra) -> dict:
    """A record for a test file, in the bundled JSON format (CIFAR-10 preprocessing)."""
    return {"model": model, "tag": tag, "url": url, "sha256": sha256, "license": "test",
            "dataset": "cifar-10",
            "preprocessing": {"resize": None, "crop": None, "mean": [0.5, 0.5, 0.5],
                              "std": [0.25, 0.25, 0.25]}, **extra}
