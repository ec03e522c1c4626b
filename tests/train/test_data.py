import pytest
import torch

from resnets.train import data as train_data
from resnets.train import paper_recipe
from resnets.train.data import build_data
from resnets.weights.preprocessing import CIFAR_MEAN, IMAGENET_MEAN, Preprocessing
from tests.synthetic import make_folder, make_photo_folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_folder(tmp_path_factory.mktemp("photos"), per_class=(20, 5))


def cfg(data, **kw):
    base = {"model": "resnet18", "data": str(data), "batch_size": 8, "val_fraction": 0.2,
            "image_size": 64}
    return paper_recipe(**{**base, **kw})


def first_batch(batches):
    return next(iter(batches.batches(0, 0, generator=torch.Generator().manual_seed(0))))


def test_photo_folder_is_stored_once_at_a_fixed_size_and_cropped_per_batch(photos):
    data = build_data(cfg(photos), torch.device("cpu"))
    assert data.in_memory and data.reason.startswith("in memory (50 images at 73x73")
    assert data.train.images.shape[1:] == (3, 73, 73)  # 64 / 0.875
    assert data.preprocessing == Preprocessing(resize=73, crop=64)  # ImageNet statistics
    x, _, _ = first_batch(data.train)
    assert x.shape == (8, 3, 64, 64) and torch.isfinite(x).all()
    x, _, _ = first_batch(data.test)
    assert x.shape == (8, 3, 64, 64)


def test_streaming_gives_the_same_preprocessing_record(photos):
    memory = build_data(cfg(photos), torch.device("cpu"))
    streamed = build_data(cfg(photos, in_memory="no", workers=0), torch.device("cpu"))
    assert not streamed.in_memory and "streaming from disk" in streamed.reason
    assert streamed.preprocessing == memory.preprocessing
    x, _, _ = first_batch(streamed.train)
    assert x.shape == (8, 3, 64, 64)


def test_memory_or_streaming_follows_decoded_bytes_not_file_count(photos, monkeypatch):
    monkeypatch.setattr(train_data, "available_memory", lambda: 1_000_000)  # 1 MB
    data = build_data(cfg(photos, workers=0), torch.device("cpu"))
    assert not data.in_memory
    assert "50 images at 73x73 = 799.4 KB decoded, more than 50% of 1.0 MB" in data.reason


def test_statistics_follow_the_model_not_the_image_size(tmp_path):
    make_folder(tmp_path, per_class=(8, 2), size=16)
    imagenet = build_data(cfg(tmp_path, image_size=None), torch.device("cpu"))
    cifar = build_data(cfg(tmp_path, image_size=None, model="resnet20"), torch.device("cpu"))
    assert imagenet.preprocessing.mean == IMAGENET_MEAN and cifar.preprocessing.mean == CIFAR_MEAN
    # images sharing one size are kept at it, as CIFAR is
    assert imagenet.preprocessing.crop == cifar.preprocessing.crop == 16
    assert cifar.train.images.shape[-1] == 16


def test_mixed_sizes_without_image_size_take_the_model_input(photos):
    data = build_data(cfg(photos, image_size=None, model="resnet20"), torch.device("cpu"))
    assert data.preprocessing.crop == data.preprocessing.resize == 32
    assert "images of mixed sizes at resnet20's 32 px" in data.reason
