import os

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data.io import (
    ImageReadError,
    decode_bytes,
    default_max_pixels,
    image_tensor,
    open_image,
    read_rgb,
    read_size,
)
from tests.synthetic import BAD_INPUTS, GOOD_INPUTS, make_hostile_inputs, write_bomb_png

REASONS = {"bomb": "more than the limit", "folder": "is a folder", "truncated": "truncated",
           "empty": "empty file", "text": "not an image"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_hostile_inputs(tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_each_bad_file_is_one_line_naming_the_file_and_the_reason(inputs, case):
    with pytest.raises(ImageReadError) as info:
        read_rgb(inputs[case])
    message = str(info.value)
    assert message.startswith(f"{inputs[case]}: ") and REASONS[case] in message
    assert "\n" not in message and info.value.path == str(inputs[case])


@pytest.mark.parametrize("case", GOOD_INPUTS)
def test_bytes_in_memory_decode_exactly_as_the_file(inputs, case):
    """An upload (``decode_bytes``) and a file (``read_rgb``) go through the same reader."""
    data = inputs[case].read_bytes()
    assert image_tensor(decode_bytes(data)).equal(read_rgb(inputs[case]))


@pytest.mark.parametrize("case", ["bomb", "truncated", "empty", "text"])
def test_bad_bytes_are_refused_for_the_reason_a_file_is(inputs, case):
    with pytest.raises(ImageReadError) as info:
        decode_bytes(inputs[case].read_bytes(), name="upload.png")
    assert str(info.value).startswith("upload.png: ") and REASONS[case] in str(info.value)
    with pytest.raises(ImageReadError) as as_file:
        read_rgb(inputs[case])
    assert info.value.kind == as_file.value.kind and info.value.reason == as_file.value.reason


def test_a_check_sees_the_header_before_any_pixel_is_decoded(tmp_path):
    big = write_bomb_png(tmp_path / "b.png", 12_000, 9_000).read_bytes()  # 108 MP if decoded
    seen = []

    def refuse(img: Image.Image) -> None:
        seen.append(img.size)
        raise ValueError("too big for this caller")

    with pytest.raises(ValueError, match="too big for this caller"):
        decode_bytes(big, max_pixels=200_000_000, check=refuse)
    assert seen == [(12_000, 9_000)]


@pytest.mark.parametrize("case", GOOD_INPUTS)
def test_awkward_modes_read_as_8bit_rgb(inputs, case):
    image = read_rgb(inputs[case])
    # every file shows a 64x48 picture; the rotated one is stored 48x64 with EXIF
    # orientation 6, so only turning it upright gives this shape
    assert tuple(image.shape) == (3, 48, 64) and image.dtype.is_floating_point is False


def test_bomb_is_refused_from_its_header_before_decoding(tmp_path):
    bomb = write_bomb_png(tmp_path / "b.png", 30_000, 30_000)
    assert bomb.stat().st_size < 1000
    small = write_bomb_png(tmp_path / "s.png", 12_000, 9_000)
    assert read_size(small) == (12_000, 9_000)
    with pytest.raises(ImageReadError, match="108,000,000 pixels, more than the limit"):
        open_image(small)
    with pytest.raises(ImageReadError, match="900,000,000 pixels, more than the limit of "
                                             "100,000,000") as info:
        open_image(bomb)
    assert info.value.kind == "too-large"
    # a caller allowing more than Pillow does is told which limit refused the file
    with pytest.raises(ImageReadError, match="900,000,000 pixels, more than Pillow's "
                                             "decompression-bomb limit of 178,956,970"):
        open_image(bomb, max_pixels=10**12)


def test_pixel_limit_is_settable_per_call_and_by_environment(tmp_path, monkeypatch):
    path = tmp_path / "p.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    with pytest.raises(ImageReadError, match="600 pixels, more than the limit of 500"):
        read_rgb(path, max_pixels=500)
    monkeypatch.setenv("RESNETS_MAX_PIXELS", "599")
    assert default_max_pixels() == 599
    with pytest.raises(ImageReadError, match="limit of 599"):
        read_rgb(path)
    assert read_rgb(path, max_pixels=600).shape == (3, 20, 30)
    monkeypatch.setenv("RESNETS_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="RESNETS_MAX_PIXELS must be a whole number"):
        read_rgb(path)


def test_missing_file_is_an_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_rgb(tmp_path / "nope.jpg")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_permissions_are_reported(tmp_path):
    path = tmp_path / "secret.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    path.chmod(0)
    with pytest.raises(ImageReadError, match="permission denied"):
        read_rgb(path)


def test_unreadable_permissions_are_reported_even_as_root(tmp_path, monkeypatch):
    path = tmp_path / "secret.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(ImageReadError, match="secret.png: permission denied") as info:
        read_rgb(path)
    assert info.value.kind == "permission"


def test_palette_with_transparency_and_16bit_png(tmp_path):
    pal = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4)).convert("P")
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert read_rgb(tmp_path / "p.png").shape == (3, 4, 4)
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "w.png")
    assert read_rgb(tmp_path / "w.png").max().item() == 255


def test_a_dark_16bit_pgm_stays_dark(tmp_path):
    """A 16-bit PGM opens in Pillow as mode "I" (not "I;16"); one whose brightest sample is
    at most 255 of 65535 is nearly black, not an 8-bit image to show at full brightness."""
    dark = np.tile(np.arange(0, 256, 4, dtype=np.uint16), (8, 1))  # 0..252 of 65535
    path = tmp_path / "dark.pgm"
    Image.fromarray(dark).save(path)
    assert Image.open(path).mode in ("I", "I;16")  # "I" in Pillow 13
    image = read_rgb(path)
    assert image.max().item() <= 1
    bright = dark * 257  # the same picture at full 16-bit range
    Image.fromarray(bright).save(tmp_path / "bright.pgm")
    assert read_rgb(tmp_path / "bright.pgm")[0].equal(torch.from_numpy(dark.astype(np.uint8)))
