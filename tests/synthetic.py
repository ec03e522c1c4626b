"""Small synthetic ImageFolder trees for fast tests."""

from __future__ import annotations

import subprocess
import sys
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


def write_bomb_png(path: Path, width: int = 30_000, height: int = 30_000) -> Path:
    """A few hundred bytes of PNG whose header declares ``width`` x ``height`` pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\0" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def make_hostile_inputs(folder: Path) -> dict[str, Path]:
    """One file per case a user's folder can hold: the bad ones (a decompression bomb, a
    folder named like a photo, a truncated JPEG, an empty file, a text file named .png) and
    the awkward good ones (RGBA, 16-bit, CMYK, EXIF-rotated)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    good = {"rgba": "png-rgba", "gray16": "png-i16", "cmyk": "tif-cmyk", "rotated": "jpg-exif"}
    files = {name: save_photo(arr, folder / name, kind) for name, kind in good.items()}
    files["bomb"] = write_bomb_png(folder / "bomb.png")
    files["folder"] = folder / "album.jpg"
    files["folder"].mkdir()
    whole = folder / "whole.jpg"
    Image.fromarray(arr).save(whole, quality=95)
    files["truncated"] = folder / "truncated.jpg"
    files["truncated"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    files["empty"] = folder / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["text"] = folder / "notes.png"
    files["text"].write_text("this is not a picture\n")
    return files


BAD_INPUTS = ("bomb", "folder", "truncated", "empty", "text")
GOOD_INPUTS = ("rgba", "gray16", "cmyk", "rotated")


def fresh_python(code: str) -> list[str]:
    """Run ``code`` in a new interpreter (a clean ``sys.modules``); its stdout, split."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()
