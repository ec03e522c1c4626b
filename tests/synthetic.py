"""Small synthetic ImageFolder trees for fast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(root: Path, classes=("a", "b", "c"), per_class=(24, 6), size=16,
                seed: int = 0) -> Path:
    """``root/train/<c>`` and ``root/test/<c>`` with class-dependent brightness + noise."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class, strict=True):
        for k, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = 40 + 80 * k
                arr = np.clip(rng.normal(base, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i:03d}.png")
    return root


def read_weights(path) -> tuple[dict, dict]:
    """The tensors and metadata of a weights file (through the package's one reader)."""
    from resnets.weights.state_dict_io import load_checkpoint

    checkpoint = load_checkpoint(path)
    return checkpoint.state_dict, checkpoint.metadata


PHOTO_KINDS = ("jpg-rgb", "png-rgba", "png-l", "jpg-exif", "png-p", "tif-cmyk", "png-i16",
               "bmp-rgb", "png-la", "jpg-l")


def save_photo(arr: np.ndarray, path_stem: Path, kind: str) -> Path:
    """Save an RGB uint8 array as one of :data:`PHOTO_KINDS` (mode and format)."""
    fmt, mode = kind.split("-")
    img = Image.fromarray(arr)
    path = path_stem.with_suffix("." + fmt)
    if mode == "exif":
        exif = img.getexif()
        exif[0x0112] = 6  # shown rotated 90 degrees clockwise
        img.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
    elif mode == "i16":
        gray = np.asarray(img.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(gray).save(path)
    elif mode == "rgba":
        img.putalpha(200)
        img.save(path)
    elif mode == "p":
        img.convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    else:
        img.convert({"rgb": "RGB", "l": "L", "la": "LA", "cmyk": "CMYK"}[mode]).save(path)
    return path


def make_photo_folder(root: Path, classes=("dark", "light"), per_class=(20, 5),
                      seed: int = 0) -> Path:
    """``root/{train,test}/<class>`` of photos of mixed sizes (40-120 px, not square), modes
    (RGB, RGBA, L, LA, P, CMYK, 16-bit), formats (JPEG, PNG, BMP, TIFF) and EXIF-rotated
    JPEGs; classes differ in brightness and texture."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class, strict=True):
        for k, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(40, 121, 2))
                base = 60 + 120 * k
                arr = np.clip(rng.normal(base, 25 + 20 * k, (h, w, 3)), 0, 255).astype(np.uint8)
                save_photo(arr, d / f"{split}_{i:03d}", PHOTO_KINDS[(i + k) % len(PHOTO_KINDS)])
    return root
