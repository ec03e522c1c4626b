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
import contextlib
import errno
import json
import logging
import os
import random
import socket
import time
import weakref
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write, pid_alive, sweep_stale_temporaries

try:
    import fcntl
except ImportError:  # Windows: the lock falls back to an exclusively created file
    fcntl = None

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


_HELD: weakref.WeakSet[RunLock] = weakref.WeakSet()  # locks this process holds


def _forget_locks_in_child() -> None:
    """A forked child (a DataLoader worker) must not keep its parent's lock alive after the
    parent dies, nor release it: it closes its copy of the descriptor and forgets it."""
    for lock in list(_HELD):
        if lock.fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock.fd)
            lock.fd = None
            lock.exclusive_file = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


class RunLock:
    """``run.lock`` in a run folder: an exclusive ``flock`` held for the whole run, and the
    pid and host of its holder written inside for people to read. A second process is
    refused with the holder named. The kernel drops the lock when its holder dies, however
    it dies, so a lock left by a killed run is taken over (with a message) without guessing
    from pids; a record that names another host is still refused, since a lock there may
    not be visible here.

    Where ``flock`` is missing (Windows) or refused by the file system (NFS without a lock
    daemon, some FUSE mounts), the lock is the file itself: created exclusively with the
    record already in it, and a record naming a process gone from this host taken over."""

    READ_DEADLINE_S = 5.0  # how long a refused process waits for the holder's record

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self.fd: int | None = None  # the flock'ed descriptor
        self.exclusive_file = False  # held by the fallback: the file is ours

    @property
    def held(self) -> bool:
        return self.fd is not None or self.exclusive_file

    def _record(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.time(), "flock": self.fd is not None}).encode()

    def acquire(self) -> None:
        use_flock = fcntl is not None
        for _ in range(6):
            if use_flock:
                taken = self._acquire_flock()
                if taken is _NO_FLOCK:
                    use_flock = False
                    continue
            else:
                taken = self._acquire_exclusive_file()
            if taken:
                _HELD.add(self)
                atexit.register(self.release)
                return
        raise FileExistsError(f"cannot take the lock {self.path}: it keeps changing hands")

    def _acquire_flock(self) -> bool | object:
        """True when taken; False to try again (the lock changed hands meanwhile);
        _NO_FLOCK when the file system refuses flock."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            record = self._wait_for_record()
            if record is _GONE:  # released while we looked: try again
                return False
            self._refuse(record)
        except OSError as e:  # the file system has no flock: the file itself is the lock
            empty = os.fstat(fd).st_size == 0
            os.close(fd)
            if empty:  # made by the open above, most likely: not a lock of anyone's
                self.path.unlink(missing_ok=True)
            _log.warning("%s: the file system refuses flock (%s): locking by exclusive "
                         "create instead", self.path.parent, e.strerror or e)
            return _NO_FLOCK
        if not self._still_named(fd):  # its holder released (unlinked) it meanwhile
            os.close(fd)
            return False
        try:
            self._take_over(self._read(fd), holding_flock=True)
            os.ftruncate(fd, 0)
            self.fd = fd
            os.pwrite(fd, self._record(), 0)
        except BaseException:
            self.fd = None
            os.close(fd)
            raise
        return True

    def _acquire_exclusive_file(self) -> bool:
        # the record goes to a private file first, then is hard-linked as run.lock (atomic,
        # fails if it exists), so that no reader ever sees it empty
        tmp = self.path.with_name(f".{LOCK_NAME}.{os.getpid()}.tmp")
        record = self._record()
        tmp.write_bytes(record)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            record = self._wait_for_record()
            if record is _GONE:
                return False
            self._take_over(record, holding_flock=False)  # refuses a live holder
            self.path.unlink(missing_ok=True)  # a dead one's: try again
            return False
        except OSError:  # no hard links either: create exclusively, then write
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(record)
        finally:
            tmp.unlink(missing_ok=True)
        self.exclusive_file = True
        return True

    def _still_named(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    @staticmethod
    def _parse(data: bytes) -> dict | None:
        """A record: None when empty, {} when it cannot be parsed."""
        if not data.strip():
            return None
        try:
            record = json.loads(data)
            return {"pid": int(record["pid"]), "host": str(record["host"]),
                    "since": float(record.get("since", 0)),
                    "flock": bool(record.get("flock", False))}
        except (ValueError, KeyError, TypeError):
            return {}

    def _read(self, fd: int) -> dict | None:
        return self._parse(os.pread(fd, 4096, 0))

    def _wait_for_record(self) -> dict | None | object:
        """The live holder's record, or _GONE when the lock file went away meanwhile. The
        holder writes it just after taking the lock, so an empty one (or the record of the
        run it took over from) is read again for a while."""
        deadline = time.monotonic() + self.READ_DEADLINE_S
        while True:
            try:
                record = self._parse(self.path.read_bytes())
            except FileNotFoundError:
                return _GONE
            mine = record and record["host"] == socket.gethostname()
            if (record and (not mine or pid_alive(record["pid"]))) or \
                    time.monotonic() > deadline:
                return record
            time.sleep(0.05)

    def _refuse(self, record: dict | None) -> None:
        if not record:
            raise FileExistsError(f"{self.path.parent} is in use by another process (its "
                                  f"lock {self.path} names no holder): wait for it, or "
                                  "choose another run folder")
        pid, host = record["pid"], record["host"]
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(record["since"]))
        where = "" if host == socket.gethostname() else f" on {host}"
        hint = "" if not where else f"; if that process is gone, delete {self.path}"
        raise FileExistsError(f"{self.path.parent} is in use by process {pid}{where} "
                              f"(since {since}): wait for it, or choose another run "
                              f"folder{hint}")

    def _take_over(self, record: dict | None, holding_flock: bool) -> None:
        """We hold the flock (or, in the fallback, found the file): a record left in it
        belongs to a run that is over, unless it names another host (refused) or, for a
        record not made under flock (or read without holding it), a live process here."""
        if record is None:
            return
        if not record:
            _log.warning("%s: replaced an unreadable lock record (no process holds the "
                         "lock)", self.path.parent)
            return
        if record["host"] != socket.gethostname():
            self._refuse(record)
        if not (holding_flock and record["flock"]) and pid_alive(record["pid"]):
            # a lock file without flock (an older version, or the fallback): its pid is all
            # there is to go by (a reused pid keeps it: delete the file if you know better)
            self._refuse(record)
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(record["since"]))
        _log.warning("%s: recovered the lock of process %d, which is gone (since %s)",
                     self.path.parent, record["pid"], since)

    def release(self) -> None:
        if self.fd is not None:
            if self._still_named(self.fd):  # not a newer run's, if ours was deleted by hand
                self.path.unlink(missing_ok=True)  # while still held: nobody takes it between
            os.close(self.fd)
            self.fd = None
        elif self.exclusive_file:
            with contextlib.suppress(OSError):
                record = self._parse(self.path.read_bytes())
                if record and record["pid"] == os.getpid():
                    self.path.unlink()
            self.exclusive_file = False
        _HELD.discard(self)


_GONE = object()  # the lock file went away while a refused process read it
_NO_FLOCK = object()  # the file system refuses flock


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
                # a killed write's leftovers; under the lock no other run writes here,
                # but a live process's file (an export into the folder) is kept
                sweep_stale_temporaries(self.path, older_than_s=0)
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
