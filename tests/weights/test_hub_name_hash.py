"""A URL file name whose digits are not a hash (a date) is read as torchvision's hash prefix:
the refusal must say so and how to load the file anyway."""

import pytest
import torch

from resnets.weights.hub import DownloadError, fetch

from .conftest import checkpoint_bytes


@pytest.fixture(scope="module")
def payload() -> bytes:
    torch.manual_seed(0)
    return checkpoint_bytes(torch.nn.Conv2d(3, 4, 1).state_dict())


def test_a_dated_file_name_is_refused_with_why_and_how_to_skip(server, cache, payload):
    url = server.add("model-20240101.pth", payload)
    with pytest.raises(DownloadError) as info:
        fetch(url, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert "20240101" in message and "file name" in message  # where the expectation came from
    assert "pass its path" in message  # how to load the file without the check
    assert not any(cache.iterdir()) if cache.exists() else True


def test_a_dated_cached_file_offline_says_the_name_was_read_as_a_hash(server, cache, payload,
                                                                     monkeypatch):
    cache.mkdir(parents=True)
    (cache / "model-20240101.pth").write_bytes(payload)
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="file name.*pass its path"):
        fetch(server.add("model-20240101.pth", payload), progress=False)


def test_an_explicit_hash_is_not_explained_as_the_file_name(server, cache, payload):
    url = server.add("model-20240101.pth", payload)
    with pytest.raises(DownloadError) as info:
        fetch(url, sha256="0123abcd", progress=False)
    assert "file name" not in str(info.value)
