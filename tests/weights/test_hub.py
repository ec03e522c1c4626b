import hashlib
import logging
import time

import pytest
import torch

from resnets.weights import hub
from resnets.weights.hub import DownloadError, fetch

from .conftest import checkpoint_bytes, hashed_name


@pytest.fixture(scope="module")
def payload() -> bytes:
    """A real checkpoint: torch.save of a small model's state."""
    torch.manual_seed(0)
    return checkpoint_bytes(torch.nn.Conv2d(3, 16, 3).state_dict())


def leftovers(folder):
    """Everything in the cache folder (temporary files included)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_is_torch_hubs_under_torch_home(torch_home, cache):
    assert hub.cache_dir() == cache
    assert str(cache).startswith(str(torch_home))


def test_hash_prefix_follows_torchvision_file_names():
    assert hub.hash_prefix_from_name("resnet50-11ad3fa6.pth") == "11ad3fa6"
    assert hub.hash_prefix_from_name("resnet20-12fca82f.th") == "12fca82f"
    assert hub.hash_prefix_from_name("model.pth") is None
    assert hub.hash_prefix_from_name("resnet50-11ad3.pth") is None  # under 8 digits


def test_download_streams_checks_and_saves_into_cache(server, cache, payload):
    name = hashed_name("tiny", payload)
    path = fetch(server.add(name, payload), progress=False)
    assert path == cache / name
    assert path.read_bytes() == payload
    assert torch.load(path, weights_only=True)["weight"].shape == (16, 3, 3, 3)
    assert server.requests == [name]
    assert leftovers(cache) == [name]


def test_cached_file_is_used_without_a_request(server, cache, payload):
    url = server.add(hashed_name("tiny", payload), payload)
    first = fetch(url, progress=False)
    second = fetch(url, progress=False)
    assert first == second
    assert len(server.requests) == 1


def test_file_torch_hub_downloaded_is_reused(server, cache, payload):
    url = server.add(hashed_name("tiny", payload), payload)
    torch.hub.load_state_dict_from_url(url, check_hash=True, progress=False)  # torchvision's way
    assert len(server.requests) == 1
    fetch(url, progress=False)
    assert len(server.requests) == 1


def test_progress_bar_names_the_file(server, payload, capsys):
    name = hashed_name("tiny", payload)
    fetch(server.add(name, payload), progress=True)
    assert name in capsys.readouterr().err


def test_hash_mismatch_fails_and_leaves_nothing(server, cache, payload):
    url = server.add("tiny-0123abcd.pth", payload)
    with pytest.raises(DownloadError, match="sha256 .* expected 0123abcd.*nothing was saved"):
        fetch(url, progress=False)
    assert leftovers(cache) == []


def test_full_sha256_is_checked(server, cache, payload):
    url = server.add("tiny.pth", payload)
    with pytest.raises(DownloadError, match="sha256"):
        fetch(url, sha256="f" * 64, progress=False)
    assert fetch(url, sha256=hashlib.sha256(payload).hexdigest(), progress=False).is_file()
    # as sha256sum or a web page prints it: upper case is the same digest
    assert fetch(url, sha256=hashlib.sha256(payload).hexdigest().upper(),
                 progress=False).is_file()


@pytest.mark.parametrize("digest", ["abc", "xyz12345", "0123abcd" * 9])
def test_a_sha256_too_short_or_not_hex_is_refused_before_downloading(digest):
    """A 3-digit prefix matches one file in 4,096 by chance: no check at all."""
    with pytest.raises(ValueError, match="expected a sha256 of 8 to 64 hex digits"):
        fetch("http://127.0.0.1:9/never.pth", sha256=digest, progress=False)


def test_file_size_is_checked(server, cache, payload):
    url = server.add("tiny.pth", payload)
    with pytest.raises(DownloadError, match=f"expected {len(payload) + 1}"):
        fetch(url, sha256="", file_size=len(payload) + 1, progress=False)
    assert leftovers(cache) == []


def test_truncated_transfer_fails_and_leaves_nothing(server, cache, payload):
    url = server.add(hashed_name("tiny", payload), payload, mode="truncate")
    with pytest.raises(DownloadError, match="cut off"):
        fetch(url, progress=False)
    assert leftovers(cache) == []


def test_server_error_fails_and_leaves_nothing(server, cache, payload):
    url = server.add(hashed_name("tiny", payload), payload, mode="500")
    with pytest.raises(DownloadError, match="HTTP 500"):
        fetch(url, progress=False)
    assert leftovers(cache) == []


def test_missing_file_is_a_download_error(server, cache):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{server.base}/nope-0123abcd.pth", progress=False)


@pytest.mark.parametrize("mode", ["hang", "stall"])
def test_timeout_fails_fast_and_leaves_nothing(server, cache, payload, mode):
    url = server.add(hashed_name("tiny", payload), payload, mode=mode)
    start = time.perf_counter()
    with pytest.raises(DownloadError, match="timed out"):
        fetch(url, timeout=0.3, progress=False)
    assert time.perf_counter() - start < 10  # not the minutes a hung read could take
    assert leftovers(cache) == []


def test_unreachable_host_says_where_to_place_the_file(cache):
    with pytest.raises(DownloadError, match="cannot reach") as info:
        fetch("http://127.0.0.1:9/tiny-0123abcd.pth", timeout=2, progress=False)
    assert f"place the file at {cache / 'tiny-0123abcd.pth'}" in str(info.value)


def test_offline_without_cache_says_which_file_to_place_where(server, cache, payload,
                                                                monkeypatch):
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    name = hashed_name("tiny", payload)
    url = server.add(name, payload)
    with pytest.raises(FileNotFoundError) as info:
        fetch(url, progress=False)
    assert str(cache / name) in str(info.value) and url in str(info.value)
    assert server.requests == []


def test_offline_uses_the_cache(server, cache, payload, monkeypatch):
    url = server.add(hashed_name("tiny", payload), payload)
    fetch(url, progress=False)
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    assert fetch(url, progress=False).read_bytes() == payload
    assert len(server.requests) == 1


def test_damaged_cached_file_is_reported_and_fetched_again(server, cache, payload, caplog):
    name = hashed_name("tiny", payload)
    cache.mkdir(parents=True)
    (cache / name).write_bytes(payload[:100])  # an earlier download cut short
    with caplog.at_level(logging.WARNING, logger="resnets.weights.hub"):
        path = fetch(server.add(name, payload), progress=False)
    assert "damaged" in caplog.text and name in caplog.text
    assert path.read_bytes() == payload
    assert server.requests == [name]


def test_damaged_cached_file_offline_is_an_error(server, cache, payload, monkeypatch):
    name = hashed_name("tiny", payload)
    cache.mkdir(parents=True)
    (cache / name).write_bytes(payload[:100])
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="damaged"):
        fetch(server.add(name, payload), progress=False)
    assert server.requests == []


def test_two_urls_ending_in_one_unhashed_name_keep_their_own_files(server, cache):
    """Without a hash in the name nothing checks the content: ``.../a/model.pth`` must not be
    answered with the file of ``.../b/model.pth`` (torch hub's cache is keyed by file name)."""
    a = checkpoint_bytes({"w": torch.zeros(3)})
    b = checkpoint_bytes({"w": torch.ones(3)})
    url_a, url_b = server.add("a/model.pth", a), server.add("b/model.pth", b)
    path_a, path_b = fetch(url_a, progress=False), fetch(url_b, progress=False)
    assert path_a != path_b and path_a.parent == path_b.parent == cache
    assert path_a.name.startswith("model.") and path_a.suffix == ".pth"
    assert path_a.read_bytes() == a and path_b.read_bytes() == b
    assert fetch(url_a, progress=False) == path_a  # cached: no third request
    assert server.requests == ["a/model.pth", "b/model.pth"]
    assert not (cache / "model.pth").exists()
