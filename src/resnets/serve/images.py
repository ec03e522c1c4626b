"""Uploaded bytes to pictures, refusing what a server must not decode.

Every refusal is an :class:`ImageRejected` with the HTTP status and a one-line reason for
the person who sent the file. Nothing is written to disk: the bytes are decoded in memory,
and the declared size is checked from the header before any pixel is decoded, so a
decompression bomb (a small file declaring a huge picture) costs nothing.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..data.io import to_rgb


class ImageRejected(ValueError):
    """An upload the server refuses: ``status`` is the HTTP status, the message the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decode_image(data: bytes, max_pixels: int,
                 check: Callable[[Image.Image], None] | None = None) -> Image.Image:
    """Decode an uploaded file fully, EXIF-rotated, if it is an image of at most
    ``max_pixels`` pixels; otherwise raise :class:`ImageRejected` (415 or 422).

    ``check`` sees the image after its header is read, before its pixels are decoded.
    """
    if not data:
        raise ImageRejected(422, "the upload is empty (0 bytes): send an image file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise ImageRejected(422, f"image refused as a decompression bomb: {e}") from None
        except UnidentifiedImageError:
            raise ImageRejected(415, "not an image (expected PNG, JPEG, WebP, BMP, GIF or "
                                     "TIFF)") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageRejected(422, f"the image is corrupt: {_first_line(e)}") from None
        width, height = img.size
        if width * height > max_pixels:
            raise ImageRejected(422, f"the image is {width}x{height} = {width * height:,} "
                                     f"pixels; this server accepts at most {max_pixels:,}")
        if check is not None:
            check(img)
        try:
            img.load()
            return ImageOps.exif_transpose(img) or img
        except Image.DecompressionBombError as e:
            raise ImageRejected(422, f"image refused as a decompression bomb: {e}") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageRejected(422, f"the image is truncated or corrupt: {_first_line(e)}"
                                ) from None


def rgb_tensor(img: Image.Image) -> torch.Tensor:
    """A decoded image as a ``(3, H, W)`` uint8 tensor (any mode, as ``read_rgb``)."""
    arr = np.asarray(to_rgb(img), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def check_upscale_size(img: Image.Image, scale: int, max_output_pixels: int) -> None:
    """Refuse an upscale whose output would pass ``max_output_pixels`` (422)."""
    width, height = img.size
    out = width * height * scale * scale
    if out > max_output_pixels:
        raise ImageRejected(422, f"x{scale} of a {width}x{height} image would be "
                                 f"{width * scale}x{height * scale} = {out:,} pixels; this "
                                 f"server makes at most {max_output_pixels:,}")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
