"""Reading images the way users have them: any mode, EXIF-rotated, returned as 8-bit RGB.

Every command and the library read image files through :func:`open_image`, the one guarded
reader, and the server reads uploads through :func:`decode_bytes`, the same reader on bytes
in memory. Pillow decodes everything torchvision's ImageFolder accepts; grayscale, palette, RGBA
(composited on black, as ``convert("RGB")`` does), CMYK and 16-bit images become 8-bit RGB.
A file that cannot be an image the caller should decode (missing, a folder, unreadable,
empty, not an image, truncated, or declaring more pixels than ``max_pixels``) raises
:class:`ImageReadError` with a one-line message that starts with the path as given. The
size is checked from the header before any pixel is decoded, so a decompression bomb costs
nothing.

This module does not import torch (:func:`resnets.data.io.read_rgb` makes tensors), so a
process can decode images before PyTorch has loaded (:mod:`resnets.data.prefetch`).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp",
                    ".gif")
# About 100 megapixels: a 12,000 x 8,000 photo passes, a header declaring 30,000 x 30,000 does
# not. $RESNETS_MAX_PIXELS sets another default for every command. Pillow's own bomb check
# (twice its MAX_IMAGE_PIXELS, ~179 MP) still applies above it.
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "RESNETS_MAX_PIXELS"


def default_max_pixels() -> int:
    """The pixel limit when a caller gives none: ``$RESNETS_MAX_PIXELS`` or 100 MP."""
    text = os.environ.get(MAX_PIXELS_ENV, "").replace("_", "").replace(",", "")
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV} must be a whole number of pixels, got "
                         f"{os.environ[MAX_PIXELS_ENV]!r}") from None
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV} must be at least 1, got {value}")
    return value


class ImageReadError(ValueError):
    """A file that cannot be read as an image: ``path`` as given, ``reason`` in a few words,
    ``kind`` one of missing, folder, permission, empty, not-an-image, too-large, corrupt."""

    def __init__(self, path: str | Path, reason: str, kind: str = "corrupt") -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.kind = str(path), reason, kind


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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _bomb(path: Path | str, e: Exception, max_pixels: int) -> ImageReadError:
    """Pillow's own refusal (above twice its MAX_IMAGE_PIXELS) in our words, naming the
    limit that refused it: ours, or Pillow's when the caller allowed more."""
    found = re.search(r"\((\d+) pixels\)", str(e))
    size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    pillow = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    limit = f"the limit of {max_pixels:,}" if max_pixels < pillow else \
        f"Pillow's decompression-bomb limit of {pillow:,}"
    return ImageReadError(path, f"{size}, more than {limit} (refused before decoding)",
                          "too-large")


def _check_file(path: Path) -> None:
    """Refuse what is not a readable, non-empty file, before Pillow sees it."""
    if path.is_dir():
        raise ImageReadError(path, "is a folder, not an image file", "folder")
    if not path.exists():
        raise ImageReadError(path, "no such file", "missing")
    if not os.access(path, os.R_OK):
        raise ImageReadError(path, "permission denied (the file is not readable)", "permission")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)", "empty")


# JPEG reduced-size decoding keeps the shorter side at least this many times the side the
# caller needs, so the final antialiased resize still does most of the shrinking. Measured
# with the bundled ResNet-56 on 400 CIFAR-10 test images upscaled to 512x384 JPEGs: top-1
# equal to full decoding for 400/400 with 4 (decoded at 1/2), 398/400 with 2 (at 1/4)
# (tests/data/test_stream.py checks a subset).
DRAFT_MARGIN = 4


def open_image(path: str | Path, max_pixels: int | None = None,
               min_side: int | None = None) -> Image.Image:
    """Open and fully decode an image, applying its EXIF orientation.

    ``max_pixels`` (None: :func:`default_max_pixels`) is checked on the header's size first.
    ``min_side``: the shorter side the caller will resize to; a JPEG whose shorter side is
    at least ``2 * DRAFT_MARGIN * min_side`` is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's
    DCT scaling, several times faster), never below ``DRAFT_MARGIN * min_side``.
    """
    path = Path(path)
    max_pixels = max_pixels or default_max_pixels()
    _check_file(path)
    with _opened(path, path, max_pixels) as img:
        return _decoded(path, img, max_pixels, min_side)


def decode_bytes(data: bytes, max_pixels: int | None = None,
                 check: Callable[[Image.Image], None] | None = None,
                 name: str = "the upload") -> Image.Image:
    """An image file's bytes (an upload), checked and decoded as :func:`open_image` reads a
    file; errors name it ``name``. ``check`` sees the image after its header is read, before
    its pixels are decoded (e.g. to refuse a size), and may raise."""
    max_pixels = max_pixels or default_max_pixels()
    if not data:
        raise ImageReadError(name, "empty file (0 bytes)", "empty")
    with _opened(io.BytesIO(data), name, max_pixels) as img:
        if check is not None:
            check(img)
        return _decoded(name, img, max_pixels, None)


def read_if_small(path: str | Path, max_side: int) -> SmallImage | None:
    """A file whose header gives no side above ``max_side``, decoded at full size exactly as
    ``to_rgb(open_image(path))``; None for a larger file or one :func:`open_image` refuses
    (reading it again reports why)."""
    path = Path(path)
    max_pixels = default_max_pixels()
    try:
        _check_file(path)
        with _opened(path, path, max_pixels) as img:
            if max(img.size) > max_side:
                return None
            size, jpeg = img.size, img.format == "JPEG"
            decoded = _decoded(path, img, max_pixels, None)
        return SmallImage(np.asarray(to_rgb(decoded), dtype=np.uint8), size, jpeg)
    except ImageReadError:
        return None


@dataclass
class SmallImage:
    """What :func:`read_if_small` read: pixels and what decides whether a reduced decode
    (:func:`reduced_size`) would have given other pixels."""

    pixels: np.ndarray       # (H, W, 3) uint8, upright
    size: tuple[int, int]    # (width, height) from the header, before EXIF rotation
    jpeg: bool


@contextmanager
def _opened(source: Path | io.BytesIO, path: Path | str, max_pixels: int
            ) -> Iterator[Image.Image]:
    """``source`` (a file, or bytes in memory) opened by Pillow (header only), its size
    checked against ``max_pixels``; errors name it ``path``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(source)
        except Image.DecompressionBombError as e:
            raise _bomb(path, e, max_pixels) from None
        except UnidentifiedImageError:
            raise ImageReadError(path, "not an image (Pillow cannot identify its format)",
                                 "not-an-image") from None
        except PermissionError:
            raise ImageReadError(path, "permission denied", "permission") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageReadError(path, f"corrupt image ({_first_line(e)})") from None
        with img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageReadError(path, f"{width}x{height} = {width * height:,} pixels, more "
                                           f"than the limit of {max_pixels:,}", "too-large")
            yield img


def _decoded(path: Path | str, img: Image.Image, max_pixels: int,
             min_side: int | None) -> Image.Image:
    """The pixels of an opened image, reduced for ``min_side`` (a JPEG), upright."""
    try:
        if img.format == "JPEG" and (target := reduced_size(img.size, min_side)):
            img.draft(None, target)
        sixteen = _holds_16bit_samples(img)
        img.load()
        if sixteen:  # mode "I" holding 0..65535: say so, so that 8-bit scaling sees it
            img = img.convert("I;16")
        return ImageOps.exif_transpose(img) or img
    except Image.DecompressionBombError as e:
        raise _bomb(path, e, max_pixels) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"truncated or corrupt image ({_first_line(e)})") from None


def _holds_16bit_samples(img: Image.Image) -> bool:
    """Whether an opened (not yet loaded) mode "I" image holds unsigned 16-bit samples: a
    PGM with a maxval above 255 (Pillow scales it to 0..65535 in mode "I"), or a file whose
    raw mode is unsigned 16-bit. Its pixel values cannot tell: a dark one peaks below 256."""
    if img.mode != "I":
        return False
    if img.format == "PPM":
        return True
    args = img.tile[0][3] if img.tile else None  # (codec, extents, offset, args)
    raw = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else ""
    return raw in ("I;16", "I;16B", "I;16L", "I;16N")


def reduced_size(size: tuple[int, int], min_side: int | None) -> tuple[int, int] | None:
    """The ``(width, height)`` a JPEG of ``size`` is asked to decode at (the decoder picks
    the smallest DCT scale not below it) so that its shorter side stays at least
    ``DRAFT_MARGIN * min_side``; None when it decodes at full size."""
    if not min_side:
        return None
    width, height = size
    scale = min_side * DRAFT_MARGIN / min(width, height)
    if scale > 0.5:
        return None
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB."""
    img = _to_8bit(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


def read_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the header alone, EXIF rotation ignored; raises
    :class:`ImageReadError` like :func:`open_image`."""
    path = Path(path)
    _check_file(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                return img.size
        except Image.DecompressionBombError as e:
            raise _bomb(path, e, default_max_pixels()) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ImageReadError(path, f"not a readable image ({_first_line(e)})") from None


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """Files as given, folders walked recursively for image files (sorted). A folder named
    like an image file (``x.jpg/``) is kept as it is, so that reading it reports it."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir() and not is_image_file(p):
            out += sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f))
        else:
            out.append(p)
    return out
