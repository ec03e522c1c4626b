"""Augmentation on whole batches, on the training device: no per-image Python.

Standard CIFAR augmentation (He et al. 2016, section 4.2): pad 4 pixels, random 32x32
crop, random horizontal flip. For photos stored at a fixed size, the ImageNet-style random
resized crop and flip (Szegedy et al. 2015; torchvision's ``RandomResizedCrop``), one
sampling grid per image. Optional cutout (DeVries & Taylor 2017). Randomness comes from an
explicit generator so a resumed run replays the same crops.
"""

from __future__ import annotations

import math

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


def random_resized_crop_flip(x: torch.Tensor, size: int, generator: torch.Generator,
                             scale: tuple[float, float] = (0.08, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3),
                             flip: bool = True) -> torch.Tensor:
    """A random crop of each image (area a ``scale`` fraction, aspect ``ratio``), resized to
    ``size`` x ``size`` (bilinear) and flipped with probability 1/2.

    uint8 or float ``(N, C, H, W)`` in, float32 ``(N, C, size, size)`` on the same 0-255
    scale out. Unlike torchvision, a crop that does not fit is clipped to the image rather
    than redrawn (a fixed number of random draws keeps resumed runs exact).
    """
    n = x.shape[0]
    gen_device = generator.device

    def uniform(low: float, high: float) -> torch.Tensor:
        u = torch.rand(n, generator=generator, device=gen_device).to(x.device)
        return low + (high - low) * u

    area = uniform(*scale)
    aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1])))
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width and height as fractions
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (uniform(-1.0, 1.0)) * (1 - w)  # crop centre in [-1, 1] grid coordinates
    cy = (uniform(-1.0, 1.0)) * (1 - h)
    sign = torch.ones(n, device=x.device)
    if flip:
        mirrored = torch.rand(n, generator=generator, device=gen_device).to(x.device) < 0.5
        sign = torch.where(mirrored, -sign, sign)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` of a batch (torchvision's rounding)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


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
