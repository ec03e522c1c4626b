"""Reading images the way users have them: any mode, EXIF-rotated, returned as uint8 RGB.

Pillow decodes everything torchvision's ImageFolder accepts; grayscale, palette, RGBA
(composited on black, as ``convert("RGB")`` does), CMYK and 16-bit images become 8-bit RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp",
                    ".gif")


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the path."""


def is_image_file(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer or float modes scaled to 8 bits (not clipped)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8))
    return img


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image, applying its EXIF orientation."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img) or img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB."""
    img = _to_8bit(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


def read_rgb(path: str | Path) -> torch.Tensor:
    """An image file as a ``(3, H, W)`` uint8 tensor."""
    img = to_rgb(open_image(path))
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
