import pytest
import torch

from resnets.data.augment import cutout, normalize, random_crop_flip
from resnets.data.split import stratified_split


def test_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(1, 1 + 2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    g = torch.Generator().manual_seed(1)
    y = random_crop_flip(x, 2, g, flip=False)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        found = any(torch.equal(y[i], padded[i, :, dy:dy + 8, dx:dx + 8])
                    for dy in range(5) for dx in range(5))
        assert found


def test_augmentation_is_reproducible_from_the_generator():
    x = torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8)
    a = random_crop_flip(x, 4, torch.Generator().manual_seed(3))
    b = random_crop_flip(x, 4, torch.Generator().manual_seed(3))
    c = random_crop_flip(x, 4, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flip_flips_about_half():
    x = torch.arange(8, dtype=torch.float32).repeat(200, 3, 8, 1)
    y = random_crop_flip(x, 0, torch.Generator().manual_seed(0))
    flipped = (y[:, 0, 0, 0] == 7).sum().item()
    assert 70 < flipped < 130


@pytest.mark.parametrize("size", [4, 5])
def test_cutout_zeroes_a_size_by_size_square_clipped_at_the_border(size):
    x = torch.ones(256, 3, 16, 16)
    y = cutout(x, size, torch.Generator().manual_seed(0))
    zero = y == 0
    assert torch.equal(zero[:, 0], zero[:, 2])  # the same square in every channel
    rows, cols = zero[:, 0].any(2).sum(1), zero[:, 0].any(1).sum(1)
    assert torch.equal(zero[:, 0].sum((1, 2)), rows * cols)  # a rectangle
    assert rows.max() == size and cols.max() == size and rows.min() >= 1
    assert (rows * cols == size * size).float().mean() > 0.4  # most squares lie inside


def test_normalize():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = normalize(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert torch.allclose(y, torch.ones_like(y))


def test_stratified_split_is_seeded_disjoint_and_per_class():
    labels = torch.arange(10).repeat_interleave(50)
    tr, va = stratified_split(labels, 0.1, seed=0)
    tr2, va2 = stratified_split(labels, 0.1, seed=0)
    assert torch.equal(va, va2) and torch.equal(tr, tr2)
    assert len(set(tr.tolist()) & set(va.tolist())) == 0 and len(tr) + len(va) == 500
    assert torch.bincount(labels[va]).tolist() == [5] * 10
    assert not torch.equal(va, stratified_split(labels, 0.1, seed=1)[1])


def test_random_resized_crop_gives_the_size_and_replays_with_the_generator():
    from resnets.data.augment import random_resized_crop_flip

    x = torch.randint(0, 256, (6, 3, 73, 73), dtype=torch.uint8)
    a = random_resized_crop_flip(x, 64, torch.Generator().manual_seed(3), (0.25, 1.0))
    b = random_resized_crop_flip(x, 64, torch.Generator().manual_seed(3), (0.25, 1.0))
    c = random_resized_crop_flip(x, 64, torch.Generator().manual_seed(4), (0.25, 1.0))
    assert a.shape == (6, 3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 255


def test_random_resized_crop_of_the_whole_image_is_the_image_or_its_mirror():
    from resnets.data.augment import random_resized_crop_flip

    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    out = random_resized_crop_flip(x, 16, torch.Generator().manual_seed(0), (1.0, 1.0),
                                   (1.0, 1.0))
    for img, got in zip(x.float(), out, strict=True):
        assert torch.allclose(got, img, atol=1e-3) or torch.allclose(got, img.flip(-1), atol=1e-3)
    flipped = sum(not torch.allclose(g, i.float(), atol=1e-3) for g, i in zip(out, x, strict=True))
    assert 0 < flipped < 8


def test_center_crop_matches_torchvision():
    from torchvision.transforms.v2 import functional as TF

    from resnets.data.augment import center_crop

    x = torch.randint(0, 256, (2, 3, 73, 73), dtype=torch.uint8)
    assert torch.equal(center_crop(x, 64), TF.center_crop(x, 64))
