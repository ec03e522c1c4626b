"""Augmentation on whole batches, on the training device: no per-image Python.

Standard CIFAR augmentation (He et al. 2016, section 4.2): pad 4 pixels, random 32x32
crop, random horizontal flip. Optional cutout (DeVries & Taylor 2017). Randomness comes
from an explicit generator so a resumed run replays the same crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator,
                     flip: bool = True) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back to the input size at a random offset per image."""
    n, _, h, w = x.shape
    gen_device = generator.device
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gen_device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gen_device)
        rows = (dy.to(x.device)[:, None] + torch.arange(h, device=x.device)[None])  # (n, h)
        cols = (dx.to(x.device)[:, None] + torch.arange(w, device=x.device)[None])  # (n, w)
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        x = x.permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(n, generator=generator, device=gen_device).to(x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x.contiguous()


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square at a random centre of each image (rows and columns
    ``centre - size // 2`` up to, not including, ``centre - size // 2 + size``), clipped at
    the border, as DeVries & Taylor's reference code does."""
    n, _, h, w = x.shape
    gen_device = generator.device
    cy = torch.randint(0, h, (n,), generator=generator, device=gen_device).to(x.device)
    cx = torch.randint(0, w, (n,), generator=generator, device=gen_device).to(x.device)
    dy = torch.arange(h, device=x.device)[None, :, None] - cy[:, None, None] + size // 2
    dx = torch.arange(w, device=x.device)[None, None, :] - cx[:, None, None] + size // 2
    inside = (dy >= 0) & (dy < size) & (dx >= 0) & (dx < size)
    return x * (~inside)[:, None].to(x.dtype)


def normalize(x_uint8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` to normalised floats."""
    m = torch.tensor(mean, device=x_uint8.device, dtype=dtype).view(1, -1, 1, 1) * 255
    s = torch.tensor(std, device=x_uint8.device, dtype=dtype).view(1, -1, 1, 1) * 255
    return (x_uint8.to(dtype) - m) / s
