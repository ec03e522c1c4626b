"""A centre crop larger than the resize would pad the image with black borders the network
never saw in training: such a preprocessing is refused in one line."""

import pytest

from resnets.weights.preprocessing import Preprocessing


def test_a_crop_larger_than_the_resize_is_refused():
    with pytest.raises(ValueError, match="crop 40 .*resize 32"):
        Preprocessing(resize=32, crop=40)


def test_metadata_with_a_size_above_its_resize_is_one_line_error():
    meta = {"mean": [0.5] * 3, "std": [0.25] * 3, "size": 224, "resize": 32}
    with pytest.raises(ValueError, match="crop 224") as info:
        Preprocessing.from_dict(meta)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("resize, crop", [(32, 32), (36, 32), (None, 32), (32, None)])
def test_crops_within_the_resize_are_kept(resize, crop):
    assert Preprocessing(resize=resize, crop=crop).input_size == (crop or resize)
