"""Uploads to pictures: every refusal has a status and a one-line reason."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from resnets.data.io import image_tensor
from resnets.serve.images import ImageRejected, check_upscale_size, decode_image

from .conftest import png
from .test_app import bomb_png


def test_a_decompression_bomb_is_refused_from_its_header():
    with pytest.raises(ImageRejected) as e:
        decode_image(bomb_png(), max_pixels=10**12)  # above Pillow's own bomb limit
    assert e.value.status == 422 and "Pillow's decompression-bomb limit" in e.value.reason
    # below Pillow's limit, this server's own (smaller) limit refuses it before decoding
    with pytest.raises(ImageRejected, match="144,000,000 pixels, more than the limit of "
                                            "1,000,000"):
        decode_image(bomb_png(12_000, 12_000), max_pixels=10**6)


def test_exif_orientation_is_applied_and_modes_become_rgb():
    img = Image.new("L", (40, 20), 128)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    decoded = decode_image(buf.getvalue(), max_pixels=10_000)
    assert decoded.size == (20, 40)
    assert image_tensor(decoded).shape == (3, 40, 20)


def test_upscale_size_check_names_the_output():
    img = decode_image(png(100, 50), max_pixels=10**6)
    check_upscale_size(img, 4, 100 * 50 * 16)
    with pytest.raises(ImageRejected, match="400x200"):
        check_upscale_size(img, 4, 100 * 50 * 16 - 1)
