"""One preprocessing type: validation, both metadata layouts, and one implementation for PIL
images, single tensors and batches."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.weights.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    cifar_default,
    imagenet_default,
)
from tests.synthetic import fresh_python


def test_upscales_a_cifar_image_to_imagenet_size_and_normalizes():
    pre = Preprocessing(resize=224, crop=224)
    x = pre(torch.full((3, 32, 32), 255, dtype=torch.uint8))
    assert x.shape == (3, 224, 224) and type(x) is torch.Tensor
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[:, 100, 100], expected, atol=1e-5)


def test_batch_tensor_and_pil_image_agree():
    pre = Preprocessing(resize=36, crop=32)
    arr = np.random.default_rng(0).integers(0, 256, (48, 40, 3), np.uint8)
    tensor = torch.from_numpy(arr).permute(2, 0, 1)
    one, batch = pre(tensor), pre(torch.stack([tensor, tensor]))
    assert one.shape == (3, 32, 32) and batch.shape == (2, 3, 32, 32)
    assert torch.equal(batch[0], one)
    from_pil = pre(Image.fromarray(arr))  # resized by PIL, as torchvision's presets do
    assert (from_pil - one).abs().mean() < 0.05


def test_image_with_wrong_channel_count_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"expected a 3-channel image \(C, H, W\) or batch "
                                         r"\(N, C, H, W\), got shape \(4, 32, 32\)"):
        Preprocessing(resize=32, crop=32)(torch.zeros(4, 32, 32, dtype=torch.uint8))


def test_both_metadata_layouts_read_back():
    pre = Preprocessing(resize=36, crop=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    assert Preprocessing.from_dict(json.loads(json.dumps(pre.to_metadata()))) == pre
    # what `resnets train` wrote before there was an interpolation field
    old = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "size": 32, "resize": 36}
    assert Preprocessing.from_dict(old) == pre


@pytest.mark.parametrize(("data", "message"), [
    ({"mean": [0.5] * 3, "std": [0.2] * 3, "size": 100000, "resize": 100000},
     "resize must be a whole number of pixels from 1 to 4096"),
    ({"mean": [0.5] * 3, "std": [0, 0.2, 0.2], "size": 32}, "std must be positive"),
    ({"mean": "abc", "std": [0.2] * 3, "size": 32}, "mean must be a list of numbers"),
    ({"mean": [0.5] * 3, "std": [float("nan")] * 3, "size": 32}, "std must be finite"),
    ({"mean": [0.5] * 3, "std": [0.2] * 2, "size": 32}, "one value per channel, got 3 and 2"),
    ("not a mapping", "expected preprocessing as a mapping"),
    ({"size": 32}, "expected preprocessing with mean, std and size"),
])
def test_hostile_metadata_is_one_line_error(data, message):
    with pytest.raises(ValueError, match=message):
        Preprocessing.from_dict(data)


@pytest.mark.parametrize("pre", [imagenet_default(), cifar_default()])
def test_resize_crop_then_normalize_equals_the_whole_preprocessing(pre):
    image = torch.randint(0, 256, (3, 300, 410), dtype=torch.uint8)
    geometry = pre.resize_crop(image)
    assert geometry.dtype == torch.uint8 and geometry.shape == (3, pre.crop, pre.crop)
    assert torch.equal(pre.normalize(geometry), pre(image))
    batch = torch.randint(0, 256, (4, 3, 260, 270), dtype=torch.uint8)
    assert torch.equal(pre.normalize(pre.resize_crop(batch)), torch.stack([pre(x) for x in batch]))


def test_a_preprocessing_that_keeps_the_size_only_normalizes():
    pre = Preprocessing(resize=None, crop=None)  # akamaster's record: images as they are
    x = torch.randint(0, 256, (2, 3, 20, 24), dtype=torch.uint8)
    assert torch.equal(pre.resize_crop(x), x)
    assert torch.allclose(pre(x), pre.normalize(x)) and pre(x).shape == (2, 3, 20, 24)


@pytest.mark.parametrize(("pre", "shape"), [
    (cifar_default(), (3, 32, 32)),
    (cifar_default(), (5, 3, 32, 32)),
    (Preprocessing(resize=32, crop=None), (3, 32, 40)),  # shorter side already 32
    (Preprocessing(resize=None, crop=24), (2, 3, 24, 24)),
])
def test_an_image_already_of_the_output_size_passes_through_unchanged(pre, shape):
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    out = pre.resize_crop(x)
    assert torch.equal(out, x) and out.data_ptr() == x.data_ptr()  # no copy
    assert torch.equal(pre.normalize(out), pre(x))  # what torchvision's transforms give


@pytest.mark.parametrize(("pre", "shape"), [
    (imagenet_default(), (3, 224, 224)),  # 224 square, but resized to 256 first
    (cifar_default(), (3, 32, 33)),
    (Preprocessing(resize=None, crop=24), (3, 24, 30)),
])
def test_an_image_of_another_size_is_still_resized_and_cropped(pre, shape):
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    assert torch.equal(pre.normalize(pre.resize_crop(x)), pre(x))
    assert pre.resize_crop(x).shape[-2:] == (pre.input_size, pre.input_size)


def test_resize_crop_at_the_output_size_does_not_import_torchvision():
    # importing torchvision imports torch._dynamo: over a second of `resnets predict`
    code = ("import sys, torch\n"
            "from resnets.weights.preprocessing import cifar_default\n"
            "cifar_default().resize_crop(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))\n"
            "print('torchvision' in sys.modules)")
    assert fresh_python(code) == ["False"]
