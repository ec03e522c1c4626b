"""Atomic file writes, one implementation for the whole package.

A writer gets a temporary path in the destination's folder (same file system, same
suffix, since some writers pick the format by it); only when it finishes is the file moved
over the destination. A crash or an error leaves the old file (or nothing) in place.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, flush the file to disk, then move it over ``path``; the
    folder is created when missing (run folders, result files)."""
    with atomic_output(path, make_parents=True, fsync=True) as tmp:
        write(tmp)
