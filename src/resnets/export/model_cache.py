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


def store(path: Path, write: Callable[[Path], Any], use_cache: bool = True) -> dict[str, Any]:
    """Put a new entry at ``path`` with ``write(path)`` (which writes atomically). A read-only
    or full cache costs the next run a conversion or calibration, not this one: the error is
    reported in the returned details (``cached``, ``cache_file``, ``cache_error``)."""
    details: dict[str, Any] = {"cached": False, "cache_file": None}
    if use_cache:
        try:
            write(path)
            details["cache_file"] = str(path)
        except OSError as e:
            details["cache_error"] = f"{type(e).__name__}: {e}"
    return details
