"""Knowledge distillation: train a student on a frozen teacher's softened predictions.

Hinton et al. (2015): the loss is ``(1 - alpha) * CE(student, labels) + alpha * T^2 *
KL(softmax(teacher / T) || softmax(student / T))``; the ``T^2`` keeps the soft term's
gradients on the scale of the hard one's as ``T`` grows. Training a network with a teacher
of its own architecture ("born-again" networks, Furlanello et al. 2018) also helps.

The teacher is any classifier ``resnets train`` wrote (a ``.safetensors`` path) or a model
name with bundled weights; it must know the same classes and expect the same input
normalisation as the data being trained on.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import Preprocess


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
    """A frozen classifier giving logits (optionally averaged with the flipped input)."""

    def __init__(self, model: nn.Module, flip: bool = False) -> None:
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.flip = flip

    def train(self, mode: bool = True) -> Teacher:  # always in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x).float()
        if self.flip:
            logits = (logits + self.model(x.flip(-1)).float()) / 2
        return logits


def load_teacher(spec: str, classes: list[str], preprocess: Preprocess,
                 device: torch.device, flip: bool = False, channels_last: bool = False
                 ) -> Teacher:
    """The teacher named by ``spec`` (a weights file or a model with bundled weights),
    checked against the data's classes and input normalisation."""
    from ..evaluate import load_classifier

    path = Path(spec)
    if path.suffix == ".safetensors" or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"teacher weights not found: {spec}")
        clf = load_classifier(weights=path)
    else:
        clf = load_classifier(model=spec)
    if clf.classes != list(classes):
        raise ValueError(f"teacher {spec} knows classes {clf.classes[:5]}... but the data has "
                         f"{list(classes)[:5]}...: a teacher must be trained on the same "
                         "classes, in the same order")
    if (tuple(clf.preprocess.mean), tuple(clf.preprocess.std)) != \
            (tuple(preprocess.mean), tuple(preprocess.std)):
        raise ValueError(f"teacher {spec} expects inputs normalised with mean "
                         f"{clf.preprocess.mean} / std {clf.preprocess.std}, the data uses "
                         f"{preprocess.mean} / {preprocess.std}")
    model = clf.model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Teacher(model, flip=flip)
