"""Starting a training run from pretrained weights: load the backbone, fresh head."""

from __future__ import annotations

from torch import nn

from ..weights.loading import load_pretrained


def load_pretrained_backbone(model: nn.Module, source: str, model_name: str | None = None,
                             quiet: bool = False) -> None:
    """Load a tag, path or URL into ``model``; a head of another shape is re-initialised
    (and a message says so), everything else must fit."""
    load_pretrained(model, source, model_name=model_name, progress=not quiet)
