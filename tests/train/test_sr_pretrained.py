"""train-sr --pretrained: a fine-tuning run starts from another run's weights (a checkpoint
or a weights file), with a new optimizer and schedule, and holds out the same validation
images as the run it starts from."""

import json

import pytest
import torch
from typer.testing import CliRunner

from resnets.cli import app
from resnets.train.run_folder import load_training_state
from resnets.train.sr import SRTrainer, pretrained_weights
from resnets.weights.sr import load_sr_weights, save_sr_weights

from .test_sr_train import flat_sr, mini_sr, tiny_cfg  # noqa: F401  (fixtures)

runner = CliRunner()


@pytest.fixture(scope="module")
def source(mini_sr, tmp_path_factory):  # noqa: F811
    """A finished tiny run to start from (seed 3: its held-out images are its own)."""
    run = tmp_path_factory.mktemp("source") / "run"
    SRTrainer(tiny_cfg(mini_sr, run, seed=3, epochs=1), quiet=True).fit()
    return run


def _val_images(run):
    return json.loads((run / "config.json").read_text())["val_images"]


@pytest.mark.parametrize("start", ["best.pt", "model.safetensors"])
def test_a_fine_tune_starts_from_the_weights_and_holds_out_their_images(mini_sr, source,  # noqa: F811
                                                                         tmp_path, start):
    run = tmp_path / "ft"
    # lr 1e-12: Adam moves every weight by about the lr, so the run ends where it started
    SRTrainer(tiny_cfg(mini_sr, run, pretrained=str(source / start), lr=1e-12, seed=0,
                       epochs=1, steps_per_epoch=2), quiet=True).fit()
    assert _val_images(run) == _val_images(source) != _val_images_of_seed0(mini_sr, tmp_path)
    before = load_sr_weights(source / "model.safetensors").state_dict()
    after = load_sr_weights(run / "model.safetensors").state_dict()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert json.loads((run / "config.json").read_text())["pretrained"] == str(source / start)
    fresh = load_training_state(run / "last.pt")
    assert fresh["scheduler"]["last_epoch"] == 2  # its own schedule, from step 0


def _val_images_of_seed0(data, tmp_path):
    trainer = SRTrainer(tiny_cfg(data, tmp_path / "probe", seed=0), quiet=True)
    trainer.run.close()
    return list(trainer.cfg.val_images)


def test_a_fine_tune_that_asks_other_held_out_images_is_refused(mini_sr, source, tmp_path):  # noqa: F811
    other = [n for n in _val_images_of_seed0(mini_sr, tmp_path) if n not in _val_images(source)]
    with pytest.raises(ValueError, match="validated on other held-out images"):
        SRTrainer(tiny_cfg(mini_sr, tmp_path / "ft", pretrained=str(source / "best.pt"),
                           val_images=tuple(other[:1] + _val_images(source)[1:])), quiet=True)


def test_pretrained_weights_of_another_network_or_missing_are_one_line_errors(
        mini_sr, source, tmp_path):  # noqa: F811
    result = runner.invoke(app, ["train-sr", "--data", str(mini_sr), "--out",
                                 str(tmp_path / "a"), "--model", "edsr_small", "--pretrained",
                                 str(source / "best.pt"), "--report", "", "--quiet"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "edsr_small" in lines[0]
    result = runner.invoke(app, ["train-sr", "--data", str(mini_sr), "--out",
                                 str(tmp_path / "b"), "--model", "edsr_tiny", "--pretrained",
                                 str(tmp_path / "none.pt"), "--report", "", "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip() == (f"error: pretrained weights not found: {tmp_path / 'none.pt'}"
                                     " (expected a train-sr checkpoint, .pt, or SR weights, "
                                     ".safetensors)")
    assert not (tmp_path / "a" / "model.safetensors").exists()


def test_a_weights_file_without_a_record_starts_with_a_seeded_hold_out(mini_sr, source,  # noqa: F811
                                                                        tmp_path):
    loose = tmp_path / "loose" / "w.safetensors"
    loose.parent.mkdir()
    save_sr_weights(load_sr_weights(source / "model.safetensors"), loose)
    state, held = pretrained_weights(loose)
    assert held is None and set(state) == set(load_sr_weights(loose).state_dict())


def test_a_bundled_file_holds_out_what_its_record_names():
    from resnets.weights.sr import bundled_sr_record, bundled_sr_weights

    bundled = bundled_sr_weights("edsr_small_x234")
    _, held = pretrained_weights(bundled)
    assert held == tuple(bundled_sr_record(bundled)["config"]["val_images"]) and len(held) == 10


def test_pretrained_origin_follows_a_chain_of_fine_tunes_back_to_the_first_run(
        mini_sr, source, tmp_path):  # noqa: F811
    from resnets.train.sr import pretrained_origin

    first = tmp_path / "ft1"
    SRTrainer(tiny_cfg(mini_sr, first, pretrained=str(source / "best.pt"), lr=1e-12,
                       epochs=1, steps_per_epoch=2), quiet=True).fit()
    origin = pretrained_origin(first / "model.safetensors")  # what a second fine-tune records
    assert origin["file"] == "model.safetensors" and "step" not in origin
    assert origin["config"]["pretrained"] == str(source / "best.pt")
    back = origin["started_from"]
    source_cfg = json.loads((source / "config.json").read_text())
    assert back["file"] == "best.pt" and back["config"]["out"] == source_cfg["out"]
    best = load_training_state(source / "best.pt")
    assert back["step"] == best["epoch"] * source_cfg["steps_per_epoch"] + best["step_in_epoch"]
    assert back["step"] > 0 and "started_from" not in back
