"""Knowledge distillation: train a student on a frozen teacher's softened predictions.

Hinton et al. (2015): the loss is ``(1 - alpha) * CE(student, labels) + alpha * T^2 *
KL(softmax(teacher / T) || softmax(student / T))``; the ``T^2`` keeps the soft term's
gradients on the scale of the hard one's as ``T`` grows. Training a network with a teacher
of its own architecture ("born-again" networks, Furlanello et al. 2018) also helps.

The teacher is any classifier ``resnets train`` wrote (a ``.safetensors`` path) or a model
name with bundled weights, or an ensemble of them (``"a,b"``: the mean of their logits);
each must know the same classes and expect the same input normalisation as the data being
trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..weights.classifier import load_classifier
from ..weights.preprocessing import Preprocessing


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
                      alpha: float, temperature: float, label_smoothing: float = 0.0
                      ) -> torch.Tensor:
    """The blended hard-label and soft-teacher loss (logits in float32)."""
    hard = F.cross_entropy(student, target, label_smoothing=label_smoothing)
    if alpha == 0:
        return hard
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    return (1 - alpha) * hard + alpha * soft


class Teacher(nn.Module):
    """Frozen classifiers giving logits: the mean over the models and, with ``flip``, over
    the image and its mirror image."""

    def __init__(self, model: nn.Module | list[nn.Module], flip: bool = False) -> None:
        super().__init__()
        self.models = nn.ModuleList(model if isinstance(model, list) else [model]).eval()
        for p in self.models.parameters():
            p.requires_grad_(False)
        self.flip = flip

    def train(self, mode: bool = True) -> Teacher:  # always in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = [x, x.flip(-1)] if self.flip else [x]
        logits = [m(v).float() for m in self.models for v in views]
        return torch.stack(logits).mean(0)


def load_teacher(spec: str, classes: list[str], preprocess: Preprocessing,
                 device: torch.device, flip: bool = False, channels_last: bool = False
                 ) -> Teacher:
    """The teacher named by ``spec``: a weights file or a model with bundled weights, or
    several of them separated by commas (an ensemble), each checked against the data's
    classes and input normalisation."""
    specs = [part.strip() for part in spec.split(",")]
    if not all(specs):
        raise ValueError(f"teacher {spec!r}: expected weights files or model names "
                         "separated by commas")
    fmt = torch.channels_last if channels_last else torch.preserve_format
    return Teacher([_load_one(part, classes, preprocess).to(device, memory_format=fmt)
                    for part in specs], flip=flip)


def _load_one(spec: str, classes: list[str], preprocess: Preprocessing) -> nn.Module:
    clf = load_classifier(spec)
    if clf.classes != list(classes):
        raise ValueError(f"teacher {spec} knows classes {clf.classes[:5]}... but the data has "
                         f"{list(classes)[:5]}...: a teacher must be trained on the same "
                         "classes, in the same order")
    if (tuple(clf.preprocessing.mean), tuple(clf.preprocessing.std)) != \
            (tuple(preprocess.mean), tuple(preprocess.std)):
        raise ValueError(f"teacher {spec} expects inputs normalised with mean "
                         f"{clf.preprocessing.mean} / std {clf.preprocessing.std}, the data uses "
                         f"{preprocess.mean} / {preprocess.std}")
    return clf.model
