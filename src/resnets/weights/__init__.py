"""Weights: records, safe download and cache, reading files, putting tensors into models.

``records`` (what exists), ``preprocessing`` (what the weights expect of an image), ``hub``
(download and cache), ``state_dict_io`` (reading files without running their code),
``loading`` (putting weights into a model), ``classifier`` (the one loader of a ready
classifier), ``sr`` (super-resolution weights). Importing this package is cheap: torch
loads with the first function that needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_LAZY = {
    "WeightRecord": "records",
    "Preprocessing": "preprocessing",
    "get_weights": "records",
    "list_weights": "records",
    "records_for": "records",
    "default_record": "records",
    "imagenet_classes": "records",
    "fetch": "hub",
    "cache_dir": "hub",
    "DownloadError": "hub",
    "load_checkpoint": "state_dict_io",
    "clean_state_dict": "state_dict_io",
    "load_pretrained": "loading",
    "load_state_dict_into": "loading",
    "get_transforms": "loading",
    "convert": "loading",
    "Classifier": "classifier",
    "load_classifier": "classifier",
}

__all__ = ["Classifier", "DownloadError", "Preprocessing", "WeightRecord", "cache_dir",
           "clean_state_dict", "convert", "default_record", "fetch", "get_transforms",
           "get_weights", "imagenet_classes", "list_weights", "load_checkpoint",
           "load_classifier", "load_pretrained", "load_state_dict_into", "records_for"]

if TYPE_CHECKING:
    from .classifier import Classifier, load_classifier
    from .hub import DownloadError, cache_dir, fetch
    from .loading import convert, get_transforms, load_pretrained, load_state_dict_into
    from .preprocessing import Preprocessing
    from .records import (
        WeightRecord,
        default_record,
        get_weights,
        imagenet_classes,
        list_weights,
        records_for,
    )
    from .state_dict_io import clean_state_dict, load_checkpoint


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
