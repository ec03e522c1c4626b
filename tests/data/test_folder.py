import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data.folder import load_folder, scan_folder
from resnets.data.io import ImageReadError, read_rgb
from tests.synthetic import make_folder


def test_scan_lists_sorted_classes_and_labels(tmp_path):
    make_folder(tmp_path, per_class=(3, 1))
    index = scan_folder(tmp_path / "train")
    assert index.classes == ["a", "b", "c"]
    assert index.labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_empty_class_folder_is_an_error(tmp_path):
    make_folder(tmp_path, per_class=(2, 1))
    (tmp_path / "train" / "d").mkdir()
    with pytest.raises(ValueError, match="class folder .*d has no images"):
        scan_folder(tmp_path / "train")


def test_no_class_folders_and_missing_root(tmp_path):
    with pytest.raises(ValueError, match="no class folders"):
        scan_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        scan_folder(tmp_path / "nope")


def test_mismatched_classes_between_splits(tmp_path):
    make_folder(tmp_path, per_class=(2, 1))
    with pytest.raises(ValueError, match=r"missing \['z'\], unexpected \['c'\]"):
        scan_folder(tmp_path / "test", classes=["a", "b", "z"])


def test_corrupt_image_is_skipped_with_warning_or_fails_strict(tmp_path):
    make_folder(tmp_path, per_class=(3, 1))
    bad = tmp_path / "train" / "b" / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.warns(UserWarning, match="broken.jpg"):
        data = load_folder(tmp_path / "train", cache_dir=tmp_path / "cache")
    assert len(data) == 9 and data.skipped == [f"{bad}: not an image (Pillow cannot identify "
                                               "its format)"]
    with pytest.raises(ImageReadError, match="broken.jpg"):
        load_folder(tmp_path / "train", cache_dir=tmp_path / "cache2", strict=True)


def test_cache_is_written_once_and_reused(tmp_path):
    make_folder(tmp_path, per_class=(3, 1))
    first = load_folder(tmp_path / "train", cache_dir=tmp_path / "cache")
    files = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(files) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = load_folder(tmp_path / "train", cache_dir=tmp_path / "cache")
    assert torch.equal(first.images, second.images) and first.images.dtype == torch.uint8
    assert first.images.shape == (9, 3, 16, 16)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "I;16", "CMYK"])
def test_any_image_mode_becomes_8bit_rgb(tmp_path, mode):
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    if mode == "I;16":
        img = Image.fromarray(arr.astype(np.uint16) * 257)
        path = tmp_path / "x.png"
    else:
        img = Image.fromarray(arr).convert(mode)
        path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    out = read_rgb(path)
    assert out.shape == (3, 8, 8) and out.dtype == torch.uint8
    if mode in ("L", "I;16"):
        assert torch.equal(out[0], torch.from_numpy(arr))


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((4, 8, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert read_rgb(tmp_path / "r.jpg").shape == (3, 8, 4)


def test_mixed_sizes_are_stored_once_at_the_given_square_size(tmp_path):
    from tests.synthetic import make_photo_folder

    make_photo_folder(tmp_path, per_class=(10, 2))
    data = load_folder(tmp_path / "train", cache_dir=tmp_path / "cache", image_size=40)
    assert data.images.shape == (20, 3, 40, 40) and data.images.dtype == torch.uint8
    with pytest.raises(ValueError, match="different sizes"):
        load_folder(tmp_path / "train", cache_dir=tmp_path / "cache")
