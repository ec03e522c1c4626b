"""resnets: residual networks on PyTorch, exact to the paper, compatible with torchvision.

Importing the package is cheap: torch and the models load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": "resnets.registry",
    "list_models": "resnets.registry",
    "get_spec": "resnets.registry",
    "model_stats": "resnets.stats",
    "optimize": "resnets.export.optimize",
    "get_transforms": "resnets.weights.pretrained",
}

__all__ = ["__version__", "create_model", "get_spec", "get_transforms", "list_models",
           "model_stats", "optimize"]

if TYPE_CHECKING:
    from .export.optimize import optimize
    from .registry import create_model, get_spec, list_models
    from .stats import model_stats
    from .weights.pretrained import get_transforms


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'resnets' has no attribute {name!r}")
