"""The model registry: ``build_model(name)`` and ``list_models(pattern)``.

Builders register themselves with :func:`register_model`, together with the facts that
``resnets info`` reports (input size, the error the paper reported and where). Importing
this module imports the ``resnets.models`` package first, which registers every builder.
Building with pretrained weights is :func:`resnets.create_model` (in ``weights``, which
sits above the models).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

_REGISTRY: dict[str, ModelSpec] = {}


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model name."""

    name: str
    builder: Callable[..., nn.Module]
    family: str  # "imagenet" or "cifar"
    input_size: tuple[int, int, int]
    num_classes: int
    paper_error: float | None = None  # top-1 error in percent, as the source reports it
    paper_source: str = ""


def register_model(family: str, input_size: tuple[int, int, int], num_classes: int,
                   paper_error: float | None = None, paper_source: str = ""
                   ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder function to the registry under its own name."""

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, fn, family, input_size, num_classes, paper_error,
                                    paper_source)
        return fn

    return add


def get_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``; an unknown name lists the closest known ones."""
    if name not in _REGISTRY:
        prefixed = [n for n in _REGISTRY if n.startswith(name)]
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        close = list(dict.fromkeys(prefixed + close))[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (`resnets info` lists them; "
                         "resnets.list_models() in Python)")
    return _REGISTRY[name]


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, in registration order, optionally filtered by a glob pattern."""
    names = list(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def build_model(name: str, **kwargs) -> nn.Module:
    """A registered model with fresh weights; keyword arguments go to the model class."""
    return get_spec(name).builder(**kwargs)
