"""Image files as uint8 tensors, read by :func:`resnets.data.image_file.open_image`.

The reader itself, its error kinds and its pixel limit live in
:mod:`resnets.data.image_file`, which does not import torch; they are named here too, so
that code reading tensors imports one module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .image_file import (
    DRAFT_MARGIN,
    ImageReadError,
    decode_bytes,
    default_max_pixels,
    is_image_file,
    open_image,
    read_size,
    to_rgb,
)

__all__ = ["DRAFT_MARGIN", "ImageReadError", "decode_bytes", "default_max_pixels",
           "image_tensor", "is_image_file", "open_image", "read_rgb", "read_size", "rgb_tensor",
           "to_rgb"]


def read_rgb(path: str | Path, max_pixels: int | None = None,
             min_side: int | None = None) -> torch.Tensor:
    """An image file as a ``(3, H, W)`` uint8 tensor (see :func:`open_image`)."""
    return image_tensor(open_image(path, max_pixels, min_side))


def image_tensor(img: Image.Image) -> torch.Tensor:
    """A decoded Pillow image of any mode as a ``(3, H, W)`` uint8 RGB tensor."""
    return rgb_tensor(np.asarray(to_rgb(img), dtype=np.uint8).copy())


def rgb_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 pixels (owned by the caller from now on) as a ``(3, H, W)`` view."""
    return torch.from_numpy(pixels).permute(2, 0, 1)
