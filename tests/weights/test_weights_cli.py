"""``resnets weights list | info | download | convert``."""

import hashlib

import torch
from typer.testing import CliRunner

import resnets
from resnets.cli import app
from resnets.weights import load_checkpoint

from .conftest import checkpoint_bytes, hashed_name, record_dict

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def one_line_error(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_list_shows_tags_accuracy_and_defaults():
    result = runner.invoke(app, ["weights", "list"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "resnet50.tv2_in1k *" in result.output and "80.86" in result.output
    assert "resnet50.tv_in1k " in result.output and "resnet50.tv_in1k *" not in result.output
    assert "resnet1202.akamaster_cifar10" in result.output


def test_list_pattern_filters_and_no_match_is_an_error():
    result = runner.invoke(app, ["weights", "list", "wide_*"], env=WIDE)
    assert result.exit_code == 0
    assert "wide_resnet101_2.tv2_in1k" in result.output and "resnet50." not in result.output
    assert "no weights match 'nothing*'" in one_line_error(
        runner.invoke(app, ["weights", "list", "nothing*"]))


def test_info_shows_the_record(cache):
    result = runner.invoke(app, ["weights", "info", "resnet50.tv_in1k"], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in out
    assert "0676ba61" in out and "76.13" in out and "92.86" in out
    assert "resize 256 (bilinear), centre crop 224" in out
    assert "1000 classes (tench, goldfish" in out
    assert str(cache / "resnet50-0676ba61.pth") in out and "not downloaded" in out


def test_info_and_list_name_the_cache_file_loading_reads_for_unhashed_records(cache):
    """akamaster's records check no hash, so their file is cached under a key of its URL;
    list and info looked for it under the plain file name, where loading never reads."""
    from resnets.weights import hub
    from resnets.weights.display import _cached, _location
    from resnets.weights.records import get_weights

    rec = get_weights("resnet20.akamaster_cifar10")
    assert rec.sha256 == ""
    where = hub.cache_path(rec.url, rec.sha256)
    assert where == hub.url_keyed_path(rec.url) != cache / rec.filename
    assert _location(rec) == where and not _cached(rec)
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_bytes(b"x")
    assert _cached(rec)
    result = runner.invoke(app, ["weights", "info", "resnet20.akamaster_cifar10"], env=WIDE)
    assert result.exit_code == 0 and str(where) in result.output, result.output


def test_info_unknown_tag_is_one_line():
    assert "unknown weights 'resnet50.nope'" in one_line_error(
        runner.invoke(app, ["weights", "info", "resnet50.nope"]))


def test_download_fetches_into_the_cache_then_works_offline(server, cache, extra_records,
                                                            monkeypatch):
    payload = checkpoint_bytes(resnets.create_model("resnet20").state_dict())
    name = hashed_name("resnet20", payload)
    extra_records([record_dict("resnet20", "resnet20.test_cifar10", server.add(name, payload),
                               hashlib.sha256(payload).hexdigest())])
    result = runner.invoke(app, ["weights", "download", "resnet20.test_cifar10"])
    assert result.exit_code == 0, result.output
    assert str(cache / name) in result.output
    assert (cache / name).read_bytes() == payload
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    resnets.create_model("resnet20", pretrained="resnet20.test_cifar10")
    assert server.requests == [name]


def test_download_offline_or_failing_is_one_line(server, extra_records, monkeypatch):
    payload = b"not served"
    extra_records([record_dict("resnet20", "resnet20.bad_cifar10",
                               server.add("r20-0123abcd.pth", payload, mode="500"), "0123abcd")])
    assert "HTTP 500" in one_line_error(
        runner.invoke(app, ["weights", "download", "resnet20.bad_cifar10"]))
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    line = one_line_error(runner.invoke(app, ["weights", "download", "resnet20.bad_cifar10"]))
    assert "offline" in line and "place the file at" in line


def test_convert_writes_safetensors(tmp_path):
    state = resnets.create_model("resnet20").state_dict()
    src = tmp_path / "in.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, src)
    out = tmp_path / "out.safetensors"
    result = runner.invoke(app, ["weights", "convert", str(src), str(out), "--model",
                                 "resnet20"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    ckpt = load_checkpoint(out)
    assert ckpt.state_dict.keys() == state.keys() and ckpt.metadata["model"] == "resnet20"
    assert "ending in .safetensors" in one_line_error(
        runner.invoke(app, ["weights", "convert", str(src), str(tmp_path / "o.pt")]))


def test_predict_with_a_folder_as_weights_says_it_is_a_folder(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), (90, 120, 150)).save(tmp_path / "x.png")
    result = runner.invoke(app, ["predict", str(tmp_path / "x.png"), "--weights",
                                 str(tmp_path)])
    line = one_line_error(result)
    assert f"{tmp_path} is a folder, not a weights file" in line
    assert "not found" not in line and ".safetensors" in line and "URL" in line
