"""Uploaded bytes to pictures, refusing what a server must not decode.

Every refusal is an :class:`ImageRejected` with the HTTP status and a one-line reason for
the person who sent the file. Nothing is written to disk: the bytes are decoded in memory,
and the declared size is checked from the header before any pixel is decoded, so a
decompression bomb (a small file declaring a huge picture) costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

from ..data.io import ImageReadError, decode_bytes


class ImageRejected(ValueError):
    """An upload the server refuses: ``status`` is the HTTP status, the message the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decode_image(data: bytes, max_pixels: int,
                 check: Callable[[Image.Image], None] | None = None) -> Image.Image:
    """Decode an uploaded file fully, EXIF-rotated, if it is an image of at most
    ``max_pixels`` pixels (:func:`resnets.data.io.decode_bytes`, the reader every command
    uses); otherwise raise :class:`ImageRejected`: 415 for what is not an image, 422 for an
    empty, corrupt, truncated or too large one.

    ``check`` sees the image after its header is read, before its pixels are decoded.
    """
    try:
        return decode_bytes(data, max_pixels, check)
    except ImageReadError as e:
        raise ImageRejected(415 if e.kind == "not-an-image" else 422, e.reason) from None


def check_upscale_size(img: Image.Image, scale: int, max_output_pixels: int) -> None:
    """Refuse an upscale whose output would pass ``max_output_pixels`` (422)."""
    width, height = img.size
    out = width * height * scale * scale
    if out > max_output_pixels:
        raise ImageRejected(422, f"x{scale} of a {width}x{height} image would be "
                                 f"{width * scale}x{height * scale} = {out:,} pixels; this "
                                 f"server makes at most {max_output_pixels:,}")
