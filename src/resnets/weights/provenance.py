"""Provenance names runs, not machine paths: what weight files we ship may say about where
they were made.

A trained file's metadata holds its run's config and result, whose paths (``out``, ``run``,
``data``) are the training machine's. :func:`strip_machine_paths` keeps the last component
of every absolute path (the run's or the dataset's name) and leaves relative paths, URLs
and everything else as they are.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

# An absolute POSIX path (or ~/...), not preceded by anything that makes it part of a URL
# or of a relative path; the last component is kept.
_ABSOLUTE = re.compile(r"(?<![\w.:/~-])~?/(?:[\w.+@-]+/)*([\w.+@-]+)/?")


def strip_machine_paths(value: Any) -> Any:
    """``value`` (text, or JSON-like data) with each absolute path cut to its last
    component: ``/root/resnets-runs/r20-full-e40`` becomes ``r20-full-e40``."""
    if isinstance(value, str):
        return _ABSOLUTE.sub(lambda m: m.group(1), value)
    if isinstance(value, dict):
        return {k: strip_machine_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strip_machine_paths(v) for v in value]
    return value


def strip_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """Safetensors metadata (string values, JSON where they hold data) without machine
    paths; values keep their encoding."""
    out = {}
    for key, text in metadata.items():
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            out[key] = strip_machine_paths(text)
            continue
        if isinstance(data, dict | list):
            out[key] = json.dumps(strip_machine_paths(data))
        else:
            out[key] = strip_machine_paths(text)
    return out


def machine_paths(metadata: dict[str, str]) -> list[str]:
    """The absolute paths left in ``metadata`` (none, for a file we ship)."""
    return [m.group(0) for text in metadata.values() for m in _ABSOLUTE.finditer(text)]


def copy_without_machine_paths(source: str | Path, dest: str | Path,
                               dtype: torch.dtype | None = None) -> Path:
    """Copy a safetensors file with :func:`strip_metadata` applied; the tensors are
    written unchanged (checked), or with their floating-point ones rounded to ``dtype``
    (float16 halves a file; loading casts back to the model's dtype). The copy is atomic."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from ..files import atomic_output

    with safe_open(str(source), "pt") as f:
        metadata = f.metadata() or {}
    tensors = load_file(str(source))
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    dest = Path(dest)
    with atomic_output(dest, make_parents=True) as tmp:
        save_file(tensors, str(tmp), metadata=strip_metadata(metadata))
        back = load_file(str(tmp))
        if back.keys() != tensors.keys() or any(
                v.dtype != back[k].dtype or not v.equal(back[k]) for k, v in tensors.items()):
            raise ValueError(f"copying {source} changed its tensors")
    return dest
