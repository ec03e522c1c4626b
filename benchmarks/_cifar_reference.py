"""The pieces both CIFAR training benchmarks share: the reference pipeline's dataset and
one training step as either pipeline takes it."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from resnets.data.augment import CIFAR_MEAN, CIFAR_STD


def reference_dataset(root: Path):
    """What most CIFAR repositories train from: ImageFolder with per-image RandomCrop(32,
    pad 4) / RandomHorizontalFlip / ToTensor / Normalize."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4),
                             transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    return datasets.ImageFolder(str(root), transform=tf)


def train_step(model, opt, x: torch.Tensor, y: torch.Tensor, bf16: bool,
               channels_last: bool) -> torch.Tensor:
    """Forward (bf16 autocast if asked), cross-entropy, backward, optimizer step."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss
