"""Which bundled super-resolution network is the default: the best by its record."""

import json
import shutil

import pytest

from resnets.models.sr import create_sr_model
from resnets.weights import sr as weights_sr
from resnets.weights.sr import (
    BUNDLED_SR_DIR,
    bundled_sr_files,
    bundled_sr_weights,
    get_sr_model,
    rank_by_quality,
    save_sr_weights,
)

FAST = "edsr_small_x234"


def _record(folder, stem: str, psnr: dict[str, float] | None) -> None:
    """A bundled file ``stem`` (an untrained edsr_tiny) with a record of these PSNRs."""
    save_sr_weights(create_sr_model("edsr_tiny", scales=(2, 3, 4)),
                    folder / f"{stem}.safetensors")
    record = {"model": stem.rsplit("_x", 1)[0], "file": f"{stem}.safetensors"}
    if psnr is not None:
        record["benchmarks"] = {k: {"psnr": v, "ssim": 0.9} for k, v in psnr.items()}
    (folder / f"{stem}.json").write_text(json.dumps(record))


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    """A bundled folder holding the real fast model, to add records to."""
    if not (BUNDLED_SR_DIR / f"{FAST}.safetensors").is_file():
        pytest.skip(f"{FAST} is not bundled")
    for suffix in (".safetensors", ".json"):
        shutil.copy(BUNDLED_SR_DIR / f"{FAST}{suffix}", tmp_path / f"{FAST}{suffix}")
    monkeypatch.setattr(weights_sr, "BUNDLED_SR_DIR", tmp_path)
    return tmp_path


def _fast_scores() -> dict[str, float]:
    record = json.loads((BUNDLED_SR_DIR / f"{FAST}.json").read_text())
    return {k: v["psnr"] for k, v in record["benchmarks"].items()}


def test_a_better_bundled_record_becomes_the_default(bundled):
    better = {k: v + 0.5 for k, v in _fast_scores().items()}
    _record(bundled, "edsr_baseline_x234", better)
    assert bundled_sr_weights() == bundled / "edsr_baseline_x234.safetensors"
    model, label = get_sr_model()
    assert label == "edsr_baseline_x234 (bundled)"
    assert model.config.width == 16  # the file's own network (edsr_tiny here)
    # by file name or model name, the fast one is still there
    for name in (FAST, "edsr_small"):
        model, label = get_sr_model(name)
        assert label == f"{FAST} (bundled)" and model.config.width == 32


def test_a_worse_or_unmeasured_record_does_not(bundled):
    _record(bundled, "edsr_baseline_x234", {k: v - 0.5 for k, v in _fast_scores().items()})
    _record(bundled, "vdsr_x234", None)
    assert [f.stem for f in bundled_sr_files()] == [FAST, "edsr_baseline_x234", "vdsr_x234"]
    assert get_sr_model()[1] == f"{FAST} (bundled)"


def test_records_are_compared_on_the_benchmarks_they_share(tmp_path):
    # b is better where both measured; its one low extra entry does not count against it
    _record(tmp_path, "a_x2", {"Set5_x2": 36.0, "Set14_x2": 32.0})
    _record(tmp_path, "b_x2", {"Set5_x2": 36.5, "Set14_x2": 32.5, "Set5_x4": 20.0})
    files = [tmp_path / "a_x2.safetensors", tmp_path / "b_x2.safetensors"]
    assert rank_by_quality(files) == files[::-1]
    (tmp_path / "b_x2.json").write_text("{not json")  # a damaged record ranks last
    assert rank_by_quality(files) == files


def test_weights_stored_in_float16_load_as_float32_rounded_and_keep_their_metadata(tmp_path):
    """What ``scripts/bundle_sr_weights.py --store-dtype float16`` ships: half the bytes, a
    float32 model on loading whose weights are the float16-rounded originals, the
    architecture record intact and machine paths cut from the metadata."""
    import torch

    from resnets.weights.provenance import copy_without_machine_paths
    from resnets.weights.sr import load_sr_weights

    torch.manual_seed(0)
    model = create_sr_model("edsr_tiny", scales=(2, 3, 4))
    full = save_sr_weights(model, tmp_path / "full.safetensors",
                           {"run": "/root/resnets-runs/sr-tiny"})
    half = copy_without_machine_paths(full, tmp_path / "half.safetensors", torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_sr_weights(half)
    assert type(loaded) is type(model)
    for name, value in loaded.state_dict().items():
        assert value.dtype == torch.float32, name
        assert torch.equal(value, model.state_dict()[name].half().float()), name
    from safetensors import safe_open
    with safe_open(str(half), "pt") as f:
        assert f.metadata()["run"] == "sr-tiny"
