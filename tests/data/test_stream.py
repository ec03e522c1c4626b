import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data.io import DRAFT_MARGIN, read_rgb
from resnets.data.stream import image_batches
from resnets.weights.preprocessing import Preprocessing, cifar_default


def _images(root: Path, count: int, size=(20, 12)) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = root / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_batches_keep_file_order_and_report_each_bad_file(tmp_path, workers):
    paths = _images(tmp_path, 7)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    paths.insert(3, tmp_path / "bad.jpg")
    paths.append(tmp_path / "missing.png")
    pre = Preprocessing(resize=8, crop=8)
    batches = list(image_batches(paths, pre, batch_size=3, workers=workers))
    assert [len(b.paths) + len(b.errors) for b in batches] == [3, 3, 3]
    assert [p for b in batches for p in b.paths] == [p for p in paths
                                                     if p.stem not in ("bad", "missing")]
    errors = [e for b in batches for e in b.errors]
    assert len(errors) == 2 and errors[0].startswith(str(tmp_path / "bad.jpg"))
    first = batches[0]
    assert first.images.dtype == torch.uint8 and first.images.shape == (3, 3, 8, 8)
    assert first.sizes[0] == (12, 20)
    assert torch.equal(first.images[0], pre.resize_crop(read_rgb(paths[0])))


def test_a_batch_of_only_bad_files_has_no_images(tmp_path):
    batches = list(image_batches([tmp_path / "gone.png"], cifar_default(), workers=2))
    assert len(batches) == 1 and batches[0].images is None and len(batches[0].errors) == 1


def test_large_jpegs_decode_reduced_but_never_below_the_margin(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (200, 10, 10)).save(path)
    assert read_rgb(path).shape == (3, 3000, 4000)
    assert read_rgb(path, min_side=256).shape == (3, 1500, 2000)  # 1/2: >= 4 x 256
    assert read_rgb(path, min_side=32).shape == (3, 375, 500)     # 1/8, the smallest
    assert read_rgb(path, min_side=1000).shape == (3, 3000, 4000)
    png = tmp_path / "big.png"
    Image.new("RGB", (800, 600)).save(png)
    assert read_rgb(png, min_side=32).shape == (3, 600, 800)  # only JPEGs decode reduced
    assert DRAFT_MARGIN * 32 <= 375


def test_reduced_decoding_keeps_top1_on_photo_sized_cifar_images(tmp_path):
    """CIFAR-10 test images upscaled to 512x384 JPEGs: decoded at 1/2 (the margin), the
    bundled ResNet-56 gives the same top-1 as from fully decoded files (400/400 measured,
    see DRAFT_MARGIN)."""
    from resnets.data.folder import scan_folder
    from resnets.weights import load_classifier
    from tests.conftest import shared_path

    sources = scan_folder(shared_path("cifar10", "test")).paths[::100]  # 100, every class
    paths = []
    for i, source in enumerate(sources):
        path = tmp_path / f"{i:03d}.jpg"
        Image.open(source).convert("RGB").resize((512, 384), Image.BICUBIC).save(path,
                                                                                 quality=90)
        paths.append(path)
    clf = load_classifier("resnet56")

    def top1(reduced: bool) -> torch.Tensor:
        batches = image_batches(paths, clf.preprocessing, 50, 0, reduced_decode=reduced)
        with torch.no_grad():
            return torch.cat([clf.model(clf.preprocessing.normalize(b.images)).argmax(1)
                              for b in batches])

    assert read_rgb(paths[0], min_side=32).shape == (3, 192, 256)
    assert torch.equal(top1(True), top1(False))


@pytest.mark.parametrize(("cores", "threads"), [(None, 1), (1, 1), (2, 1), (3, 1), (8, 4),
                                                (64, 4)])
def test_default_workers_leave_half_the_cores_to_the_model(monkeypatch, cores, threads):
    from resnets.data import stream

    monkeypatch.setattr(stream.os, "cpu_count", lambda: cores)
    assert stream.default_workers() == threads


def test_decoding_starts_before_the_first_batch_is_asked_for_and_stops_on_close(
        tmp_path, monkeypatch):
    from resnets.data import stream

    paths = _images(tmp_path, 3) * 20
    read, started = [], threading.Event()

    def counted(path, **kwargs):
        read.append(path)
        started.set()
        return read_rgb(path, **kwargs)

    monkeypatch.setattr(stream, "read_rgb", counted)
    batches = image_batches(paths, Preprocessing(resize=8, crop=8), batch_size=2, workers=1)
    assert started.wait(10)  # nothing iterated yet
    first = next(batches)
    batches.close()
    assert first.paths == paths[:2] and len(read) <= 3 * 2  # no more than the filled pipeline
