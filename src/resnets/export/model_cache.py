"""The cache of exported, converted and quantized models: where entries live, what keys them.

Exporting or converting a model takes seconds and calibrating int8 takes longer than
predicting a few hundred small images, so OpenVINO's converted and quantized models and
onnxruntime's exported and quantized ones are kept under the user cache folder
(``$RESNETS_CACHE/<runtime>``, by default ``~/.cache/resnets/<runtime>``). An entry's name
holds the sha256 of everything the model depends on (:func:`cache_key`): the weights and
architecture (:func:`model_sha256`), the input size, the calibration set, the
preprocessing and the exporter's and runtime's versions
(:func:`package_versions`), so a change to any of them makes a new entry, never a stale hit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.folder import default_cache_dir
from ..files import atomic_write


def cache_dir(runtime: str) -> Path:
    """Where ``runtime``'s models are kept: ``$RESNETS_CACHE/<runtime>`` (default
    ``~/.cache/resnets/<runtime>``), beside the dataset caches."""
    return default_cache_dir() / runtime


def model_sha256(model: nn.Module) -> str:
    """sha256 of the architecture (module tree) and every tensor of the ``state_dict``."""
    h = hashlib.sha256(repr(model).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def package_versions(*names: str) -> dict[str, str | None]:
    """The installed versions of ``names`` (None where missing)."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 (hex) of ``parts``, a JSON-able description of everything an entry depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def store(path: Path, write: Callable[[Path], Any], use_cache: bool = True,
          sealed: bool = False) -> dict[str, Any]:
    """Put a new entry at ``path`` with ``write(path)`` (which writes atomically). A read-only
    or full cache costs the next run a conversion or calibration, not this one: the error is
    reported in the returned details (``cached``, ``cache_file``, ``cache_error``).
    ``sealed``: also write the entry's sha256 beside it (:func:`seal`)."""
    details: dict[str, Any] = {"cached": False, "cache_file": None}
    if use_cache:
        try:
            write(path)
            if sealed:
                seal(path)
            details["cache_file"] = str(path)
        except OSError as e:
            details["cache_error"] = f"{type(e).__name__}: {e}"
    return details


# An int8 entry cannot be checked against anything cheap when it is loaded (an fp32 one is
# compared with PyTorch; int8 differs from it by design): a well-formed file damaged or
# replaced in place would be served. So int8 entries carry the sha256 of their files,
# written after them, and one whose files no longer match is quantized again.

def _entry_files(path: Path) -> list[Path]:
    """The files of the entry at ``path``: an OpenVINO ``.xml`` comes with its ``.bin``."""
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _files_sha256(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def seal(path: Path) -> None:
    """Write ``<entry>.sha256``: the sha256 of the entry's files, read back from disk."""
    digest = _files_sha256(_entry_files(path))
    atomic_write(_digest_path(path), lambda tmp: tmp.write_text(digest + "\n"))


def is_sealed(path: Path) -> bool:
    """Whether the entry at ``path`` is whole and unchanged since :func:`seal` (an entry
    without its digest, from before digests or cut off before it, is not)."""
    files, digest = _entry_files(path), _digest_path(path)
    if not all(f.is_file() for f in files) or not digest.is_file():
        return False
    try:
        return digest.read_text().strip() == _files_sha256(files)
    except OSError:
        return False
