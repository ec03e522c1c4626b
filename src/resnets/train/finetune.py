"""Starting a training run from pretrained weights: load the backbone, fresh head."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from ..weights.loading import load_pretrained

_log = logging.getLogger(__name__)


def load_pretrained_backbone(model: nn.Module, source: str, model_name: str | None = None,
                             quiet: bool = False, classes: Sequence[str] | None = None) -> None:
    """Load a tag, path or URL into ``model``, everything but the head must fit.

    The weights' head is kept only when it answers the same question: its shape fits and,
    where the weights record their class names, they are ``classes`` (the data's, in order).
    Otherwise the head starts at zero, as in Big Transfer (Kolesnikov et al. 2020): the
    first steps then see a uniform prediction, not confident nonsense from another task's
    head (or a random one) whose gradients would tear at the pretrained features.
    Measured (BENCHMARKS.md, issue #15): ResNet-18 from CIFAR-10 classes 0-4 to 100 photos
    per class of classes 5-9, seed 0, lr 0.01 / backbone x0.25: 62.2% test top-1 with the
    source head kept, 70.2% with it zeroed.
    """
    head = _head(model)
    before = head.weight.detach().clone() if head is not None else None
    record = load_pretrained(model, source, model_name=model_name, progress=not quiet)
    if head is None:
        return
    fresh = _head(model)  # a head of another size is replaced by a new module
    loaded = fresh is head and not torch.equal(before, head.weight)
    head = fresh
    theirs = _record_classes(record)
    if loaded and (classes is None or theirs is None or tuple(theirs) == tuple(classes)):
        return
    if loaded:
        _log.warning("the weights' head was trained on other classes (%s) than the data's "
                     "(%s): it starts at zero", _short(theirs), _short(classes))
    with torch.no_grad():
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()


def _head(model: nn.Module) -> nn.Linear | None:
    head = getattr(model, "fc", None)
    return head if isinstance(head, nn.Linear) else None


def _record_classes(record) -> tuple[str, ...] | None:
    if record is None:
        return None
    try:
        return tuple(record.classes)
    except ValueError:  # a record of a dataset without standard class names
        return None


def _short(names: Sequence[str] | None) -> str:
    names = list(names or [])
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
