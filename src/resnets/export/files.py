"""Atomic file writes: a reader never sees a half-written export."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path``.

    The temporary file keeps the suffix of ``path`` (some writers choose the format by it)
    and is removed if the block raises, so a failed export leaves nothing behind.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output {path} is a folder: give a file name inside it")
    if not path.parent.exists():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
