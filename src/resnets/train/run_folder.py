"""A training run's folder, shared by both trainers (classification and super-resolution).

A run folder holds ``config.json`` (the resolved config), ``last.pt`` and ``best.pt`` (the
full training state for a bitwise-exact resume), the metrics log, and at the end
``model.safetensors`` with ``result.json``. Every file is written atomically (temporary
file in the folder, flushed, renamed), so a crash mid-write leaves the previous file intact.
Our training states contain only tensors and plain containers, so they load with
``weights_only=True``.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write, pid_alive

LOCK_NAME = "run.lock"
_log = logging.getLogger(__name__)


def rng_states() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def saved_config(folder: str | Path) -> dict | None:
    """The resolved config a run folder was started with (its ``config.json``), or None."""
    path = Path(folder) / "config.json"
    return json.loads(path.read_text()) if path.exists() else None


def save_training_state(path: str | Path, state: dict) -> None:
    """``state`` to ``path`` atomically: a failed write (a full disk) leaves the previous
    checkpoint as it was."""
    def write(tmp: Path) -> None:
        try:
            torch.save(state, tmp)
        except RuntimeError as e:  # torch's zip writer reports a failed write this way
            if "write" not in str(e).lower():
                raise
            raise OSError(errno.EIO, f"cannot write ({str(e).strip().splitlines()[0]})",
                          str(tmp)) from None

    atomic_write(path, write)


def load_training_state(path: str | Path) -> dict:
    """A ``last.pt`` / ``best.pt`` written by a trainer."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"cannot load checkpoint {path}: the file is empty (a write was cut "
                         "off)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler reports damage with assorted error types
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot load checkpoint {path}: damaged or not a resnets training "
                         f"checkpoint ({reason})") from None
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise ValueError(f"cannot load checkpoint {path}: not a resnets training checkpoint "
                         "(no config and model state)")
    return state


class RunLock:
    """``run.lock`` in a run folder: the pid and host of the one process writing it. A
    second process is refused with the holder named; the lock of a process that is gone
    (same host) is taken over with a message."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        # The lock appears whole or not at all: its content goes to a private file first,
        # which is then hard-linked to run.lock (atomic, and it fails if run.lock exists).
        # Creating run.lock with O_EXCL and then writing it would leave a moment in which a
        # second process reads an empty lock.
        tmp = self.path.with_name(f".{LOCK_NAME}.{os.getpid()}.tmp")
        text = json.dumps(me)
        tmp.write_text(text)
        try:
            for _ in range(3):
                try:
                    self._create_from(tmp, text)
                except FileExistsError:
                    self._check_holder()
                    continue
                self.held = True
                atexit.register(self.release)
                return
        finally:
            tmp.unlink(missing_ok=True)
        raise FileExistsError(f"cannot take the lock {self.path}: it keeps changing hands")

    def _create_from(self, tmp: Path, text: str) -> None:
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: exclusive create, then write
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(text)

    def _read_holder(self) -> dict:
        """The holder's record; an empty or half-written lock is read again for up to a
        second (the exclusive-create fallback writes after creating)."""
        for attempt in range(10):
            try:
                return json.loads(self.path.read_text())
            except ValueError:
                if attempt == 9:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def _check_holder(self) -> None:
        """Raise if a live process holds the lock; remove it if its holder is gone."""
        try:
            holder = self._read_holder()
            pid, host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (ValueError, KeyError, TypeError, OSError):
            holder, pid, host = {}, -1, "?"
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder.get("since", 0)))
        if host == socket.gethostname() and pid > 0 and not pid_alive(pid):
            _log.warning("%s: recovered the lock of process %d, which is gone (since %s)",
                         self.path.parent, pid, since)
            self.path.unlink(missing_ok=True)
            return
        if pid < 0:
            raise FileExistsError(f"{self.path} exists but cannot be read: if no training "
                                  "runs in this folder, delete it")
        where = "" if host == socket.gethostname() else f" on {host}"
        hint = "" if not where else f"; if that process is gone, delete {self.path}"
        raise FileExistsError(f"{self.path.parent} is in use by process {pid}{where} "
                              f"(since {since}): wait for it, or choose another run "
                              f"folder{hint}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


class RunFolder:
    """One run's folder. A new run must not overwrite an existing one; resuming needs a
    ``last.pt``; one process at a time writes it (``run.lock``). ``enabled=False`` (DDP
    ranks other than 0) reads but never writes."""

    def __init__(self, path: str | Path, resume: bool, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.resume_state: dict | None = None
        self.lock = RunLock(self.path)
        last = self.path / "last.pt"
        if resume:
            if not last.exists():
                raise FileNotFoundError(f"nothing to resume: {last} does not exist")
            if enabled:
                self.lock.acquire()
                for stale in self.path.glob(".*.tmp*"):  # a killed write's leftovers
                    stale.unlink(missing_ok=True)
            try:
                self.resume_state = load_training_state(last)
            except BaseException:
                self.close()
                raise
        elif last.exists():
            raise FileExistsError(f"{self.path} already holds a run: resume it, or choose "
                                  "another run folder")

    def start(self, config: dict[str, Any]) -> None:
        """Create the folder of a new run, take its lock and write its ``config.json``."""
        if self.enabled and self.resume_state is None:
            self.path.mkdir(parents=True, exist_ok=True)
            if not self.lock.held:
                self.lock.acquire()
            if (self.path / "last.pt").exists():  # another run finished here meanwhile
                self.close()
                raise FileExistsError(f"{self.path} already holds a run: resume it, or "
                                      "choose another run folder")
            self.write_json("config.json", config)

    def close(self) -> None:
        """Release the lock (at the end of a run; also done at exit)."""
        self.lock.release()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def save(self, name: str, state: dict) -> None:
        """A training state (``last.pt``, ``best.pt``), atomically."""
        if self.enabled:
            save_training_state(self.path / name, state)

    def load(self, name: str) -> dict:
        return load_training_state(self.path / name)

    def write_json(self, name: str, obj: Any) -> Path:
        path = self.path / name
        if self.enabled:
            atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2)))
        return path
