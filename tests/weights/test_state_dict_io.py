import builtins
from collections import OrderedDict

import pytest
import torch
import torch.serialization
from safetensors.torch import save_file

from resnets.weights.state_dict_io import (
    clean_state_dict,
    extract_state_dict,
    load_checkpoint,
    read_raw,
    save_safetensors,
)


def small_state() -> dict[str, torch.Tensor]:
    return {"conv1.weight": torch.randn(4, 3, 3, 3), "bn1.running_mean": torch.randn(4)}


class _WritesAFile:
    """A pickle payload: unpickling calls open(target, "w"), creating the file."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (builtins.open, (self.target, "w"))


def test_checkpoint_with_code_is_refused_and_the_code_never_runs(tmp_path):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": small_state(), "payload": _WritesAFile(str(target))}, path)
    with pytest.raises(ValueError, match="refusing to load .*evil.pth.*open"):
        load_checkpoint(path)
    assert not target.exists()
    # The payload is live: an unsafe load does run it (so the check above can fail).
    torch.load(path, weights_only=False)
    assert target.exists()


def _to_cuda(obj):
    if isinstance(obj, torch.Tensor):
        return obj.cuda()
    if isinstance(obj, dict):
        return type(obj)((k, _to_cuda(v)) for k, v in obj.items())
    return obj


def save_as_if_from_cuda(obj, path, legacy: bool = False) -> None:
    """torch.save with every storage on cuda:0: moved there where a GPU exists, else
    tagged so (the file then reads exactly as one written on a GPU machine)."""
    if torch.cuda.is_available():
        torch.save(_to_cuda(obj), path, _use_new_zipfile_serialization=not legacy)
        return
    real = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    finally:
        torch.serialization.location_tag = real


@pytest.mark.parametrize("legacy", [False, True])
def test_checkpoint_saved_on_cuda_loads_on_cpu(tmp_path, legacy):
    state = small_state()
    path = tmp_path / "gpu.th"
    save_as_if_from_cuda(state, path, legacy)
    if not torch.cuda.is_available():  # the file really asks for a GPU
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    loaded = load_checkpoint(path).state_dict
    assert all(v.device.type == "cpu" for v in loaded.values())
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize("container", ["state_dict", "model", "model_ema"])
def test_containers_are_unwrapped(tmp_path, container):
    state = small_state()
    path = tmp_path / "ckpt.pth"
    torch.save({container: state, "epoch": 90, "best_prec1": 91.7}, path)
    ckpt = load_checkpoint(path)
    assert set(ckpt.state_dict) == set(state)
    assert ckpt.metadata["epoch"] == 90 and ckpt.metadata["best_prec1"] == 91.7


def test_ema_flag_prefers_the_ema_weights():
    plain, ema = small_state(), small_state()
    raw = {"model": plain, "model_ema": ema}
    assert extract_state_dict(raw)[0]["conv1.weight"] is plain["conv1.weight"]
    assert extract_state_dict(raw, ema=True)[0]["conv1.weight"] is ema["conv1.weight"]


def test_nested_containers_are_unwrapped():
    state = small_state()
    assert extract_state_dict({"model": {"state_dict": state}})[0].keys() == state.keys()


def test_wrapper_prefixes_are_stripped_and_ema_counter_dropped():
    w = torch.randn(2)
    raw = OrderedDict([("module.conv1.weight", w), ("_orig_mod.fc.bias", w),
                       ("module._orig_mod.layer1.0.bn1.weight", w), ("n_averaged", w),
                       ("module.n_averaged", w)])
    assert list(clean_state_dict(raw)) == ["conv1.weight", "fc.bias", "layer1.0.bn1.weight"]


def test_keys_that_collide_after_stripping_are_an_error():
    w = torch.randn(2)
    with pytest.raises(ValueError, match="conv1.weight"):
        clean_state_dict({"module.conv1.weight": w, "conv1.weight": w})


def test_not_a_state_dict_is_an_error_naming_what_was_found():
    with pytest.raises(ValueError, match="not tensors: optimizer"):
        extract_state_dict({"optimizer": 3, "w": torch.ones(1)})
    with pytest.raises(ValueError, match="got a list"):
        extract_state_dict([torch.ones(1)])


def test_safetensors_load_with_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"module.conv1.weight": torch.ones(2, 3)}, str(path),
              metadata={"model": "resnet20", "preprocess": '{"size": 32}'})
    ckpt = load_checkpoint(path)
    assert list(ckpt.state_dict) == ["conv1.weight"]
    assert ckpt.metadata == {"model": "resnet20", "preprocess": {"size": 32}}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_is_a_clear_error(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(small_state(), path)
    else:
        save_file(small_state(), str(path))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="cannot read .*truncated, damaged"):
        load_checkpoint(path)


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown checkpoint format 'w.npz': expected .pth"):
        read_raw(tmp_path / "w.npz")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        read_raw(tmp_path / "none.pth")


def test_save_safetensors_is_atomic_and_needs_the_suffix(tmp_path):
    shared = torch.randn(4, 4)
    out = save_safetensors({"a": shared, "b": shared[0]}, tmp_path / "out.safetensors",
                           {"tag": "x", "n": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]
    ckpt = load_checkpoint(out)
    assert torch.equal(ckpt.state_dict["b"], shared[0]) and ckpt.metadata == {"tag": "x", "n": 3}
    with pytest.raises(ValueError, match="ending in .safetensors, got 'out.pth'"):
        save_safetensors({"a": shared}, tmp_path / "out.pth")


def test_a_training_checkpoint_says_its_model_classes_and_preprocessing(tmp_path):
    """best.pt/last.pt hold the model name in their config, and the classes and
    preprocessing beside it: dropped, a plain20 checkpoint loaded as resnet20 (same keys
    and shapes), with classes 0..9 and CIFAR's statistics."""
    import resnets
    from resnets.weights import load_classifier

    classes = [f"kind{i}" for i in range(10)]
    pre = {"mean": [0.5] * 3, "std": [0.25] * 3, "size": 32, "resize": 32}
    state = {"version": 1, "config": {"model": "plain20", "epochs": 3},
             "model": resnets.create_model("plain20").state_dict(), "ema": None,
             "classes": classes, "preprocess": pre, "epoch": 3}
    torch.save(state, tmp_path / "best.pt")
    clf = load_classifier(str(tmp_path / "best.pt"))
    assert clf.name == "plain20" and clf.classes == classes
    assert clf.preprocessing.mean == (0.5, 0.5, 0.5)
    assert clf.preprocessing.std == (0.25, 0.25, 0.25)
