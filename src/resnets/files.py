"""Atomic file writes, one implementation for the whole package.

A writer gets a temporary path in the destination's folder (same file system, same
suffix, since some writers pick the format by it); only when it finishes is the file moved
over the destination. A crash or an error leaves the old file (or nothing) in place.

Temporary files are named ``.NAME.PID.XXXX.tmpSUFFIX``. The ones this process has open are
removed on SIGTERM and SIGINT as well as on errors; a process killed outright (SIGKILL,
power loss) leaves its files behind, and a later write into the same folder removes the
temporary files of processes that are gone and that nothing has written for an hour
(``PID`` is checked on this host; containers sharing a cache folder each see the others'
pids as gone, and the hour keeps their writes in progress safe. A folder shared by two
machines over the network is not supported).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# The one piece of process-wide state in the package: a signal handler cannot be handed
# the writers' paths any other way. Only this module reads or changes it.
_LIVE: dict[Path, int] = {}  # temporary path -> the pid that created it
# reentrant: the signal handler takes it in the main thread, which may be holding it
_LIVE_LOCK = threading.RLock()
_HANDLED: dict[int, object] = {}  # signal -> the handler that was there before ours
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp[^/]*$")
STALE_AFTER_S = 3600.0  # unwritten this long, with its pid gone here: abandoned


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def sweep_stale_temporaries(folder: str | Path,
                            older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary files in ``folder`` whose writing process is gone and that
    were last written over ``older_than_s`` ago; returns them. Files of live processes
    (this one included), and recent ones of a pid unknown here (another container's), are
    left alone. A caller that holds the folder's lock may pass ``older_than_s=0``."""
    removed = []
    now = time.time()
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or not entry.is_file():
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            if now - entry.stat().st_mtime < older_than_s:
                continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


def _remove_live_temporaries() -> None:
    with _LIVE_LOCK:  # a forked child (a DataLoader worker) leaves its parent's files alone
        paths = [path for path, pid in _LIVE.items() if pid == os.getpid()]
        for path in paths:
            del _LIVE[path]
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def _on_signal(signum: int, frame) -> None:
    """Remove this process's temporary files, then do what was done before: call the
    previous handler (SIGINT's raises KeyboardInterrupt), or die of the signal."""
    _remove_live_temporaries()
    previous = _HANDLED.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    """Once per process, from the main thread only (Python's rule for signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        current = signal.getsignal(signum)
        if current is _on_signal or current is None:  # None: set outside Python
            continue
        _HANDLED[signum] = current
        signal.signal(signum, _on_signal)


@contextlib.contextmanager
def atomic_output(path: str | Path, make_parents: bool = False, fsync: bool = False
                  ) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path``.

    ``make_parents`` creates a missing folder (otherwise that is an error for the user);
    ``fsync`` flushes the file to disk first (checkpoints). The file gets the usual
    permissions (0666 less the umask), not the temporary file's 0600.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output {path} is a folder: give a file name inside it")
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.exists():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")
    _install_signal_handlers()
    sweep_stale_temporaries(path.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.",
                                        suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as e:  # read-only folder, no permission, no space: name the target
        raise OSError(e.errno, f"cannot write here ({e.strerror})", str(path)) from None
    os.close(fd)
    tmp = Path(tmp_name)
    with _LIVE_LOCK:
        _LIVE[tmp] = os.getpid()
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if isinstance(e, ConnectionError) or e.errno is None \
                or e.filename not in (None, str(tmp), tmp):
            raise
        # e.g. a full disk: the error names the file being written, not its temporary
        raise OSError(e.errno, f"cannot write ({e.strerror or e}); the previous file, if "
                      "any, is unchanged", str(path)) from None
    finally:
        with _LIVE_LOCK:
            _LIVE.pop(tmp, None)
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, flush the file to disk, then move it over ``path``; the
    folder is created when missing (run folders, result files)."""
    with atomic_output(path, make_parents=True, fsync=True) as tmp:
        write(tmp)


def atomic_copy(source: str | Path, path: str | Path) -> None:
    """Copy ``source`` to ``path`` atomically, the folder created when missing: a file made
    in a temporary folder put into a cache (:mod:`resnets.export.model_cache`)."""
    with atomic_output(path, make_parents=True) as tmp:
        shutil.copyfile(source, tmp)
