"""resnets: residual networks on PyTorch, exact to the paper, compatible with torchvision.

Importing the package is cheap: torch and the models load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": "resnets.weights.loading",
    "list_models": "resnets.models.registry",
    "get_spec": "resnets.models.registry",
    "model_stats": "resnets.models.stats",
    "optimize": "resnets.export.optimize",
    "load_backend": "resnets.export.backends",
    "get_transforms": "resnets.weights.loading",
    "load_classifier": "resnets.weights.classifier",
    "Classifier": "resnets.weights.classifier",
    "Preprocessing": "resnets.weights.preprocessing",
}

__all__ = ["Classifier", "Preprocessing", "__version__", "create_model", "get_spec",
           "get_transforms", "list_models", "load_backend", "load_classifier", "model_stats",
           "optimize"]

if TYPE_CHECKING:
    from .export.backends import load_backend
    from .export.optimize import optimize
    from .models.registry import get_spec, list_models
    from .models.stats import model_stats
    from .weights.classifier import Classifier, load_classifier
    from .weights.loading import create_model, get_transforms
    from .weights.preprocessing import Preprocessing


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'resnets' has no attribute {name!r}")
