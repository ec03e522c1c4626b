"""Pretrained weights: records, safe download and cache, checkpoint loading and cleaning.

``records`` (what exists), ``hub`` (download and cache), ``checkpoint`` (reading files
without running their code), ``pretrained`` (putting weights into a model). Importing this
package is cheap: torch loads with the first function that needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_LAZY = {
    "WeightRecord": "records",
    "Preprocessing": "records",
    "get_weights": "records",
    "list_weights": "records",
    "records_for": "records",
    "default_record": "records",
    "imagenet_classes": "records",
    "fetch": "hub",
    "cache_dir": "hub",
    "DownloadError": "hub",
    "load_checkpoint": "checkpoint",
    "clean_state_dict": "checkpoint",
    "load_pretrained": "pretrained",
    "load_state_dict_into": "pretrained",
    "get_transforms": "pretrained",
    "convert": "pretrained",
}

__all__ = ["DownloadError", "Preprocessing", "WeightRecord", "cache_dir", "clean_state_dict",
           "convert", "default_record", "fetch", "get_transforms", "get_weights",
           "imagenet_classes", "list_weights", "load_checkpoint", "load_pretrained",
           "load_state_dict_into", "records_for"]

if TYPE_CHECKING:
    from .checkpoint import clean_state_dict, load_checkpoint
    from .hub import DownloadError, cache_dir, fetch
    from .pretrained import convert, get_transforms, load_pretrained, load_state_dict_into
    from .records import (
        Preprocessing,
        WeightRecord,
        default_record,
        get_weights,
        imagenet_classes,
        list_weights,
        records_for,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
