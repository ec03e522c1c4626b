import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from resnets.cli import app
from resnets.data.sr import (
    PatchSampler,
    SRImages,
    dihedral,
    holdout,
    load_sr_images,
    patch_size_for,
)
from resnets.models.imresize import downscale
from resnets.models.sr import EDSR, create_sr_model
from resnets.tasks.sr_eval import evaluate_sr
from resnets.train.run_folder import load_training_state as load_checkpoint
from resnets.train.sr import (
    SRTrainConfig,
    SRTrainer,
    checkpoint_model,
    cosine_factor,
    lr_factor,
)
from resnets.weights.sr import load_sr_weights
from tests.conftest import shared_path

runner = CliRunner()




@pytest.fixture(scope="module")
def mini_sr(tmp_path_factory):
    """A data root shaped like ../shared/data/sr: corners of the first real T91 and BSD200
    images, small enough for a run of seconds."""
    src = shared_path("sr")
    root = tmp_path_factory.mktemp("sr")
    for name, count, (w, h) in (("T91", 4, (40, 48)), ("BSD200", 4, (48, 40))):
        (root / name).mkdir()
        for f in sorted((src / name).iterdir())[:count]:
            Image.open(f).convert("RGB").crop((0, 0, w, h)).save(root / name / f"{f.stem}.png")
    return root


@pytest.fixture(scope="module")
def flat_sr(tmp_path_factory):
    """Eight flat images, each of its own grey level: a patch names the image it came from."""
    root = tmp_path_factory.mktemp("flat")
    for i in range(8):
        folder = root / ("T91" if i < 4 else "BSD200")
        folder.mkdir(exist_ok=True)
        Image.fromarray(np.full((32, 40, 3), 20 + 25 * i, np.uint8)).save(folder / f"{i}.png")
    return root


def tiny_cfg(data, out, **kw) -> SRTrainConfig:
    base = {"model": "edsr_tiny", "data": str(data), "out": str(out), "scales": (2, 3, 4),
            "patch_size": 24, "batch_size": 4, "epochs": 2, "steps_per_epoch": 6,
            "lr": 1e-3, "val_count": 2, "report_sets": (), "seed": 0}
    base.update(kw)
    return SRTrainConfig(**base)


def test_tiny_run_writes_every_artifact_and_the_weights_serve_sr_eval(mini_sr, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_cfg(mini_sr, run, report_sets=("Set5",),
                   report_data=str(shared_path("sr", "matlab_ref")))
    result = SRTrainer(cfg, quiet=True).fit()
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "curves.png", "last.pt",
                 "best.pt", "model.safetensors", "result.json"):
        assert (run / name).exists(), name
    saved_cfg = json.loads((run / "config.json").read_text())
    assert len(saved_cfg["val_images"]) == 2 and saved_cfg["val_images"] == result["val_images"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and [r["step"] for r in rows] == [6, 12]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,step,train_loss,val_psnr,val_psnr_x2,bicubic_psnr_x2")
    ckpt = load_checkpoint(run / "last.pt")
    for key in ("model", "optimizer", "scheduler", "generator", "rng", "epoch",
                "step_in_epoch", "config", "best_val"):
        assert key in ckpt, key
    assert ckpt["epoch"] == 2 and list(ckpt["config"]["val_images"]) == saved_cfg["val_images"]
    on_disk = json.loads((run / "result.json").read_text())
    assert set(on_disk["val"]) == {"x2", "x3", "x4"}
    set5 = on_disk["report"]["Set5"]
    assert set(set5) == {"x2", "x3", "x4"}
    assert set5["x2"]["bicubic_psnr"] == pytest.approx(33.66, abs=0.02)  # README's bicubic

    model = load_sr_weights(run / "model.safetensors")  # no name: the metadata says EDSR
    assert isinstance(model, EDSR) and model.scales == (2, 3, 4)
    best = load_checkpoint(run / "best.pt")["model"]
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())
    cli = runner.invoke(app, ["sr-eval", "--data", str(shared_path("sr", "matlab_ref", "Set5")),
                              "--scale", "3", "--weights", str(run / "model.safetensors"),
                              "--backend", "torch", "--json"])  # eager: equal to 1e-9
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["mean"]["psnr"] == pytest.approx(set5["x3"]["psnr"], abs=1e-9)
    picture = next(iter(sorted((mini_sr / "T91").iterdir())))
    cli = runner.invoke(app, ["upscale", str(picture), "-o", str(tmp_path / "up"), "--scale",
                              "4", "--weights", str(run / "model.safetensors"), "--quiet"])
    assert cli.exit_code == 0, cli.output
    assert Image.open(tmp_path / "up" / f"{picture.stem}_x4.png").size == (160, 192)


def _cli_args(data, out, *extra):
    return ["train-sr", "--data", str(data), "--out", str(out), "--model", "edsr_tiny",
            "--patch-size", "24", "--batch-size", "4", "--epochs", "2", "--steps-per-epoch",
            "6", "--val-count", "2", "--report", "", "--set", "lr=0.001", "--quiet", *extra]


# Dies by SIGKILL when it draws its 12th batch: epoch 2, after the step-4 checkpoint, with
# step 5 done and lost. The kill lands at a known place instead of racing a timer.
KILL_AT_BATCH = """
import os, signal, sys
import resnets.data.sr as sr
real_sample = sr.PatchSampler.sample
calls = {"n": 0}
def dying_sample(self, *a, **k):
    calls["n"] += 1
    if calls["n"] == 12:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_sample(self, *a, **k)
sr.PatchSampler.sample = dying_sample
from resnets.cli import app
app(sys.argv[1:])
"""


def test_sigkill_mid_epoch_then_resume_is_bitwise_equal(mini_sr, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "resnets"]
    subprocess.run([*cli, *_cli_args(mini_sr, tmp_path / "ref")], check=True, env=env,
                   timeout=120)
    script = tmp_path / "kill.py"
    script.write_text(KILL_AT_BATCH)
    cut = tmp_path / "cut"
    proc = subprocess.run([sys.executable, str(script),
                           *_cli_args(mini_sr, cut, "--checkpoint-every", "4")],
                          env=env, timeout=120)
    assert proc.returncode == -9, "the run must die by SIGKILL"
    state = load_checkpoint(cut / "last.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 4), "killed mid-epoch 2"
    assert not (cut / "model.safetensors").exists()
    subprocess.run([*cli, "train-sr", "--resume", str(cut), "--quiet"], check=True, env=env,
                   timeout=120)
    ref, got = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(cut / "last.pt")
    assert ref["model"].keys() == got["model"].keys()
    assert all(torch.equal(ref["model"][k], got["model"][k]) for k in ref["model"])
    assert torch.equal(ref["generator"], got["generator"])
    rows = [[json.loads(r) for r in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (tmp_path / "ref", cut)]
    assert [r["epoch"] for r in rows[1]] == [1, 2]
    for a, b in zip(*rows, strict=True):  # same losses and PSNRs, the resumed epoch included
        assert (a["train_loss"], a["val_psnr"]) == (b["train_loss"], b["val_psnr"])


def test_lr_patches_are_downscale_of_the_hr_patches(mini_sr):
    data = load_sr_images(mini_sr)
    sampler = PatchSampler(data, 24, (2, 3, 4))
    g = torch.Generator().manual_seed(1)
    for scale in (2, 3, 4):
        lr, hr = sampler.sample(6, scale, g)
        side = patch_size_for(24, scale)
        assert hr.dtype == lr.dtype == torch.uint8
        assert hr.shape == (6, 3, side, side) and lr.shape == (6, 3, side // scale, side // scale)
        for i in range(6):
            assert torch.equal(lr[i], downscale(hr[i], scale))
    state = g.get_state()
    again = torch.Generator()
    again.set_state(state)
    assert torch.equal(sampler.sample(4, 3, g)[1], sampler.sample(4, 3, again)[1])
    assert not torch.equal(sampler.sample(4, 3, g)[1], sampler.sample(4, 3, g)[1])


def test_patch_side_is_rounded_down_to_a_multiple_of_the_scale():
    assert [patch_size_for(96, s) for s in (2, 3, 4)] == [96, 96, 96]
    assert [patch_size_for(32, s) for s in (2, 3, 4)] == [32, 30, 32]


def test_dihedral_gives_eight_distinct_flips_and_rotations():
    x = torch.arange(9).reshape(1, 3, 3)
    views = {tuple(dihedral(x, t).flatten().tolist()) for t in range(8)}
    assert len(views) == 8
    assert torch.equal(dihedral(x, 0), x) and torch.equal(dihedral(x, 4), x.flip(-1))


def test_held_out_validation_images_never_reach_the_training_pool(flat_sr, tmp_path):
    trainer = SRTrainer(tiny_cfg(flat_sr, tmp_path / "run", val_count=3, patch_size=16),
                        quiet=True)
    val = set(trainer.cfg.val_images)
    assert len(val) == 3 and not val & set(trainer.sampler.names)
    assert len(trainer.sampler.names) == 5
    grey = {n: 20 + 25 * int(Path(n).stem) for n in trainer.sampler.names}
    g = torch.Generator().manual_seed(0)
    seen = set()
    for scale in (2, 3, 4) * 20:
        _, hr = trainer.sampler.sample(8, scale, g)
        seen |= set(hr[:, 0, 0, 0].tolist())
    assert seen == set(grey.values())  # every training image, and no other


def test_holdout_is_seeded_and_listed_in_the_config(flat_sr, tmp_path):
    names = [f"T91/{i}.png" for i in range(20)]
    assert holdout(names, 5, 0) == holdout(names, 5, 0) != holdout(names, 5, 1)
    assert holdout(names, 5, 0) == sorted(holdout(names, 5, 0))
    chosen = ["BSD200/5.png", "T91/0.png"]
    trainer = SRTrainer(tiny_cfg(flat_sr, tmp_path / "run", val_images=chosen, patch_size=16),
                        quiet=True)
    assert list(trainer.cfg.val_images) == chosen
    assert {"T91/0.png", "BSD200/5.png"}.isdisjoint(trainer.sampler.names)


def test_bf16_autocast_trains(mini_sr, tmp_path):
    result = SRTrainer(tiny_cfg(mini_sr, tmp_path / "run", amp="bf16", epochs=1,
                                scales=(2,)), quiet=True).fit()
    assert np.isfinite(result["best_val_psnr"])


@pytest.mark.parametrize("native_at_start", [True, False])
def test_amp_auto_is_stored_resolved_and_kept_on_resume(mini_sr, tmp_path, monkeypatch,
                                                        native_at_start):
    """As in classifier training: ``auto`` is stored as what it meant where the run began,
    so a resume on a CPU where it means otherwise keeps the run's numerics."""
    from resnets import devices

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native_at_start)
    run = tmp_path / "run"
    SRTrainer(tiny_cfg(mini_sr, run, amp="auto", epochs=1, scales=(2,)), quiet=True).fit()
    stored = "bf16" if native_at_start else "none"
    assert json.loads((run / "config.json").read_text())["amp"] == stored
    assert load_checkpoint(run / "last.pt")["config"]["amp"] == stored
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: not native_at_start)
    resumed = SRTrainer(SRTrainConfig(data=str(mini_sr), out=str(run)), resume=True,
                        quiet=True, changes={"epochs": 2})
    try:
        assert resumed.cfg.amp == stored
        assert resumed.amp == (torch.bfloat16 if native_at_start else None)
    finally:
        resumed.run.close()


def test_a_stop_right_after_an_epochs_checkpoint_keeps_its_metrics_row(mini_sr, tmp_path,
                                                                       monkeypatch):
    """The epoch's row is logged before its checkpoint: a stop right after ``last.pt`` was
    written left a run that resumed past a row it never logged."""
    from resnets.train import run_folder

    class Stop(Exception):
        pass

    real = run_folder.RunFolder.save

    def save(self, name, state):
        real(self, name, state)
        if name == "last.pt":
            monkeypatch.setattr(run_folder.RunFolder, "save", real)
            raise Stop

    monkeypatch.setattr(run_folder.RunFolder, "save", save)
    run = tmp_path / "run"
    with pytest.raises(Stop):
        SRTrainer(tiny_cfg(mini_sr, run, scales=(2,)), quiet=True).fit()
    SRTrainer(SRTrainConfig(data=str(mini_sr), out=str(run)), resume=True, quiet=True).fit()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_checkpoint_model_is_the_runs_network_at_its_step(mini_sr, tmp_path):
    """What the curve, parity and rounding scripts read from a run still training."""
    run = tmp_path / "run"
    SRTrainer(tiny_cfg(mini_sr, run, epochs=1, scales=(2,)), quiet=True).fit()
    model, cfg, step = checkpoint_model(run / "last.pt")
    assert step == 6 and cfg["model"] == "edsr_tiny" and not model.training
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(model(x, 2), load_sr_weights(run / "model.safetensors")(x, 2))


def test_a_finished_run_back_without_best_pt_finishes_with_its_last_weights(mini_sr, tmp_path):
    """A GPU lease brings back last.pt alone; with every epoch done the resume had no
    epoch left to choose a best from and failed on the missing best.pt."""
    run = tmp_path / "run"
    SRTrainer(tiny_cfg(mini_sr, run, epochs=1, scales=(2,)), quiet=True).fit()
    for name in ("best.pt", "model.safetensors", "result.json"):
        (run / name).unlink()
    result = SRTrainer(SRTrainConfig(data=str(mini_sr), out=str(run)), resume=True,
                       quiet=True).fit()
    assert result["weights"] == "last.pt" and result["best_epoch"] == 1
    assert np.isfinite(result["best_val_psnr"]) and (run / "model.safetensors").is_file()


def test_a_resume_may_change_the_report_sets(mini_sr, tmp_path):
    """`train-sr --resume RUN --report Set5` was refused: the report sets are scored at the
    end only and choose nothing."""
    run = tmp_path / "run"
    SRTrainer(tiny_cfg(mini_sr, run, epochs=1, scales=(2,)), quiet=True).fit()
    resumed = SRTrainer(SRTrainConfig(data=str(mini_sr), out=str(run)), resume=True,
                        quiet=True, changes={"epochs": 2, "report_sets": ("Set5",),
                                             "report_data": str(shared_path("sr",
                                                                            "matlab_ref"))})
    try:
        assert resumed.cfg.report_sets == ("Set5",)
    finally:
        resumed.run.close()


def test_channels_last_trains_the_same_network_as_nchw(mini_sr, tmp_path):
    """NHWC is a layout, not a recipe: the same seed gives the same losses to float noise,
    and a run checkpointed in NCHW (a config saved before the option) resumes in NHWC."""
    rows = {}
    for fmt in (True, False):
        trainer = SRTrainer(tiny_cfg(mini_sr, tmp_path / f"cl{fmt}", epochs=1,
                                     channels_last=fmt), quiet=True)
        conv = trainer.model.head
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) is fmt
        trainer.fit()
        rows[fmt] = json.loads((tmp_path / f"cl{fmt}" / "metrics.jsonl").read_text())
    assert rows[True]["train_loss"] == pytest.approx(rows[False]["train_loss"], rel=1e-4)
    assert rows[True]["val_psnr"] == pytest.approx(rows[False]["val_psnr"], abs=1e-3)

    run = tmp_path / "clFalse"
    state = torch.load(run / "last.pt", weights_only=False)
    del state["config"]["channels_last"]
    torch.save(state, run / "last.pt")
    resumed = SRTrainer(SRTrainConfig(data=str(mini_sr), out=str(run)), resume=True,
                        quiet=True, changes={"epochs": 2})
    assert resumed.cfg.channels_last
    resumed.fit()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_cosine_schedule_decays_to_the_floor():
    assert cosine_factor(0, 100) == 1.0
    assert cosine_factor(50, 100) == pytest.approx(0.5)
    assert cosine_factor(100, 100, floor=0.1) == pytest.approx(0.1)
    assert cosine_factor(0, 100, warmup=10) == pytest.approx(0.1)
    assert cosine_factor(10, 100, warmup=10) == 1.0


def test_user_errors_are_one_line(mini_sr, tmp_path):
    def error_of(*args):
        result = runner.invoke(app, ["train-sr", *args])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        return lines[0]

    assert "expected a folder holding T91, BSD200" in error_of(
        "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"))
    assert "nothing to resume" in error_of("--resume", str(tmp_path / "r"))
    common = ["--data", str(mini_sr), "--out", str(tmp_path / "r"), "--report", "",
              "--val-count", "2"]
    assert "unknown super-resolution model 'edsr_huge'" in error_of(
        *common, "--model", "edsr_huge")
    assert "no parameters to train" in error_of(*common, "--model", "bicubic")
    assert "scales must be distinct values of [2, 3, 4]" in error_of(*common, "--scales", "2,5")
    assert "no training image is at least 96x96" in error_of(*common, "--patch-size", "96")
    assert "report set Set5 not found" in error_of(*common[:4], "--val-count", "2")
    assert "fewer validation images than the 8" in error_of(*common[:6], "--val-count", "8")
    SRTrainer(tiny_cfg(mini_sr, tmp_path / "r", epochs=1, steps_per_epoch=1), quiet=True).fit()
    assert "already holds a run" in error_of(*common)


def _coded_images() -> SRImages:
    """Images whose pixels name their place: R = column, G = row, B = the image's number."""
    images = []
    for k, (h, w) in enumerate(((40, 48), (52, 36), (30, 30))):
        y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        images.append(torch.stack([x, y, torch.full_like(x, k)]).to(torch.uint8))
    return SRImages(["T91/a.png", "T91/b.png", "BSD200/c.png"], images)


def _transforms_seen(augment: str, draws: int = 12) -> set[int]:
    """The dihedral index of every patch a sampler with ``augment`` draws (each patch is
    matched against the 8 flips/rotations of the crop at its corner)."""
    data = _coded_images()
    sampler = PatchSampler(data, 12, (2, 3, 4), augment=augment)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(draws):
        for patch in sampler.hr_patches(8, 2, g):
            img = data.images[int(patch[2, 0, 0])]
            top, left = int(patch[1].min()), int(patch[0].min())
            crop = img[:, top:top + 12, left:left + 12]
            matches = [t for t in range(8) if torch.equal(dihedral(crop, t), patch)]
            assert len(matches) == 1, "every patch is one transform of a crop"
            seen.add(matches[0])
    return seen


def test_augment_chooses_which_flips_and_rotations_patches_get():
    assert _transforms_seen("none") == {0}  # crops exactly as they are in the image
    assert _transforms_seen("flip") == {0, 4}  # 4: a horizontal flip
    assert _transforms_seen("dihedral") == set(range(8))


def test_default_patches_are_the_ones_drawn_before_augment_existed():
    """A resumed run of an older config must draw the same patches: this digest was taken
    with the code before the augment option (seeded sampler, dihedral)."""
    y, x = (t for t in torch.meshgrid(torch.arange(52), torch.arange(48), indexing="ij"))

    def image(h, w, k):
        return torch.stack([(x[:h, :w] * 7 + y[:h, :w] * 13 + c * 50 + k * 31) % 256
                            for c in range(3)]).to(torch.uint8)

    data = SRImages(["T91/a.png", "T91/b.png", "BSD200/c.png"],
                    [image(40, 48, 0), image(52, 36, 1), image(30, 30, 2)])
    sampler = PatchSampler(data, 24, (2, 3, 4))
    g = torch.Generator().manual_seed(3)
    digest = hashlib.sha256()
    for scale in (2, 3, 4, 2):
        lr, hr = sampler.sample(5, scale, g)
        digest.update(hr.numpy().tobytes())
        digest.update(lr.numpy().tobytes())
    assert digest.hexdigest()[:16] == "ad9db908a3f886b6"


def test_unknown_augment_is_refused_by_the_sampler():
    with pytest.raises(ValueError, match="augment must be one of dihedral, flip, none"):
        PatchSampler(_coded_images(), 12, (2,), augment="rotate")


def test_step_schedule_halves_every_step_every_steps_after_the_warmup():
    cfg = SRTrainConfig(data="x", schedule="step", step_every=10, warmup_steps=4)
    assert [lr_factor(cfg, s) for s in (0, 3)] == [0.25, 1.0]  # linear warm-up
    assert [lr_factor(cfg, s) for s in (4, 9, 10, 19, 20, 35)] == [1, 1, .5, .5, .25, .125]


def test_constant_schedule_stays_at_the_lr_and_cosine_is_the_default():
    cfg = SRTrainConfig(data="x", schedule="constant", warmup_steps=2, epochs=1,
                        steps_per_epoch=100)
    assert [lr_factor(cfg, s) for s in (0, 1, 2, 50, 99, 500)] == [0.5, 1, 1, 1, 1, 1]
    default = SRTrainConfig(data="x", epochs=1, steps_per_epoch=100, warmup_steps=10,
                            min_lr_ratio=0.1)
    assert default.schedule == "cosine" and default.augment == "dihedral"
    for s in (0, 5, 10, 40, 99):
        assert lr_factor(default, s) == cosine_factor(s, 100, 10, 0.1)


def test_trainer_follows_the_step_schedule(mini_sr, tmp_path):
    trainer = SRTrainer(tiny_cfg(mini_sr, tmp_path / "run", schedule="step", step_every=4,
                                 epochs=2, steps_per_epoch=6), quiet=True)
    trainer.fit()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # after 6 steps: halved at steps 4 -> 0.5; after 12: halved at 4, 8, 12 -> 0.125
    assert [r["lr"] for r in rows] == pytest.approx([1e-3 * 0.5, 1e-3 * 0.125])


def test_config_refuses_schedule_options_that_would_be_ignored(mini_sr, tmp_path):
    cases = {
        "schedule must be one of cosine, step, constant": {"schedule": "linear"},
        "step_every must be >= 1": {"schedule": "step"},
        "step_every applies to the step schedule only": {"step_every": 5},
        "min_lr_ratio is the cosine schedule's floor": {"schedule": "constant",
                                                        "min_lr_ratio": 0.1},
        "augment must be one of dihedral, flip, none": {"augment": "rot90"},
        "epoch_report names a set twice": {"epoch_report": ("Set5", "Set5")},
    }
    for message, change in cases.items():
        with pytest.raises(ValueError, match=message):
            tiny_cfg(mini_sr, tmp_path / "r", **change).validate()
    with pytest.raises(FileNotFoundError, match="report set Set7 not found"):
        SRTrainer(tiny_cfg(mini_sr, tmp_path / "r", epoch_report=("Set7",)), quiet=True)


def test_a_config_saved_before_the_new_options_loads_with_todays_behaviour():
    saved = SRTrainConfig(data="x").to_dict()
    for name in ("augment", "schedule", "step_every", "epoch_report", "channels_last"):
        del saved[name]
    cfg = SRTrainConfig.from_dict(saved)
    assert (cfg.augment, cfg.schedule, cfg.step_every, cfg.epoch_report) == (
        "dihedral", "cosine", 0, ())
    assert cfg.channels_last  # a layout only: older runs resume in the faster one


def test_epoch_report_logs_set5_psnr_of_the_current_weights_every_epoch(mini_sr, tmp_path):
    run = tmp_path / "run"
    ref = shared_path("sr", "matlab_ref")
    SRTrainer(tiny_cfg(mini_sr, run, epoch_report=("Set5",), report_data=str(ref)),
              quiet=True).fit()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(f"Set5_psnr_x{s}" in r for r in rows for s in (2, 3, 4))
    assert rows[0]["Set5_psnr_x2"] != rows[1]["Set5_psnr_x2"]
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "Set5_psnr_x4" in header and header.index("Set5_psnr_x2") < header.index("lr")
    model = create_sr_model("edsr_tiny", scales=(2, 3, 4))
    model.load_state_dict(load_checkpoint(run / "last.pt")["model"])
    # the protocol of sr-eval, on the weights at the epoch's end. Not bit-equal: the trainer
    # runs its channels-last copy, and on an AVX2-only CPU (2026-12-01) the two layouts'
    # convolutions round differently (3.6e-7 dB); a wrong shave, channel or checkpoint
    # moves PSNR by 0.01 dB or more
    for s in (2, 3, 4):
        want = evaluate_sr(model.eval(), ref / "Set5", s).mean()[0]
        assert rows[-1][f"Set5_psnr_x{s}"] == pytest.approx(want, abs=1e-4)


def test_compile_trains_one_graph_per_scale_and_validates_eagerly(mini_sr, tmp_path,
                                                                  monkeypatch):
    """compile=True sends training steps through torch.compile, one graph per scale (each
    scale's patches have one shape); validation runs the eager model on images of any size,
    and the checkpoint holds the model's own keys. The graphs run in eager mode here (a
    counting backend): inductor's code generation takes minutes on this CPU."""
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(tuple(next(x for x in example_inputs if x.dim() == 4).shape))
        return gm.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, mode=None, dynamic=None: real_compile(
        model, backend=counting_backend, dynamic=dynamic))
    torch._dynamo.reset()
    run = tmp_path / "run"
    trainer = SRTrainer(tiny_cfg(mini_sr, run, compile=True), quiet=True)
    assert trainer.train_model is not trainer.model
    trainer.fit()
    torch._dynamo.reset()
    assert sorted(graphs) == [(4, 3, 6, 6), (4, 3, 8, 8), (4, 3, 12, 12)]  # x4, x3, x2
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    state = load_checkpoint(run / "last.pt")
    assert state["config"]["compile"] and not any("_orig_mod" in k for k in state["model"])
    resumed = SRTrainer(SRTrainConfig(out=str(run)), resume=True, quiet=True,
                        changes={"compile": False, "epochs": 3})
    assert resumed.train_model is resumed.model
    resumed.fit()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_compile_mode_is_checked(mini_sr, tmp_path):
    with pytest.raises(ValueError, match="compile_mode must be one of default, "):
        SRTrainer(tiny_cfg(mini_sr, tmp_path / "run", compile=True, compile_mode="fast"))


def test_a_run_resumed_without_its_best_pt_chooses_among_the_epochs_to_come(mini_sr, tmp_path):
    """A run brought from another machine with last.pt alone (best.pt is as large, and the
    GPU lease brings back little) finishes: the best is chosen from the epochs it runs."""
    run = tmp_path / "run"
    SRTrainer(tiny_cfg(mini_sr, run, epochs=1), quiet=True).fit()
    (run / "best.pt").unlink()
    result = SRTrainer(SRTrainConfig(out=str(run)), resume=True, quiet=True,
                       changes={"epochs": 2}).fit()
    assert result["best_epoch"] == 2 and (run / "model.safetensors").exists()
    assert load_checkpoint(run / "best.pt")["epoch"] == 2


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU"))])
def test_the_sampler_makes_the_lr_on_the_device_with_the_same_pixels(mini_sr, device):
    sampler = PatchSampler(load_sr_images(mini_sr), 24, (2, 3, 4))
    for scale in (2, 3, 4):
        g, again = torch.Generator().manual_seed(scale), torch.Generator().manual_seed(scale)
        lr, hr = sampler.sample(6, scale, g, device)
        want_lr, want_hr = sampler.sample(6, scale, again)
        assert lr.device.type == hr.device.type == device
        assert torch.equal(hr.cpu(), want_hr) and torch.equal(lr.cpu(), want_lr)


def test_resume_refuses_other_training_images_and_names_the_difference(flat_sr, tmp_path):
    import shutil

    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(flat_sr, data)
    SRTrainer(tiny_cfg(data, run, epochs=1), quiet=True).fit()
    assert load_checkpoint(run / "last.pt")["dataset"]["images"] == 8
    changed = data / "T91" / "0.png"
    Image.fromarray(np.full((32, 40, 3), 21, np.uint8)).save(changed)  # one grey level off
    with pytest.raises(ValueError, match="the 8 training images of .* differ from the run's in "
                                         "names or pixels; resume with the images the run"):
        SRTrainer(SRTrainConfig(out=str(run)), resume=True, quiet=True, changes={"epochs": 2})
    Image.fromarray(np.full((32, 40, 3), 20, np.uint8)).save(changed)  # as it was
    Image.fromarray(np.full((32, 40, 3), 99, np.uint8)).save(data / "BSD200" / "extra.png")
    with pytest.raises(ValueError, match="holds 9 training images, the run started on 8"):
        SRTrainer(SRTrainConfig(out=str(run)), resume=True, quiet=True, changes={"epochs": 2})
    (data / "BSD200" / "extra.png").unlink()
    SRTrainer(SRTrainConfig(out=str(run)), resume=True, quiet=True, changes={"epochs": 2}).fit()
    assert load_checkpoint(run / "last.pt")["epoch"] == 2  # the same images again: it resumes


def test_a_checkpoint_from_before_the_fingerprint_resumes_unchecked(flat_sr, tmp_path):
    run = tmp_path / "run"
    SRTrainer(tiny_cfg(flat_sr, run, epochs=1), quiet=True).fit()
    state = torch.load(run / "last.pt", weights_only=False)
    del state["dataset"]
    torch.save(state, run / "last.pt")
    SRTrainer(SRTrainConfig(out=str(run)), resume=True, quiet=True, changes={"epochs": 2}).fit()
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_a_gray_validation_image_is_scored_as_sr_eval_scores_it(mini_sr, tmp_path):
    """A grayscale file is its own Y in sr-eval; validation must not score it as the Y of
    three equal planes (an untrained model: 21.65 dB one way, 18.74 dB the other)."""
    from resnets.train.sr import validation_pairs, validation_scores

    root, hr = tmp_path / "sr", tmp_path / "hr"
    (root / "T91").mkdir(parents=True)
    hr.mkdir()
    src = sorted((mini_sr / "T91").iterdir())[0]
    Image.open(src).convert("L").save(root / "T91" / "gray.png")
    Image.open(src).convert("L").save(hr / "gray.png")
    Image.open(src).save(root / "T91" / "rgb.png")
    images = load_sr_images(root, ("T91",))
    assert images.gray == [True, False]
    torch.manual_seed(0)
    model = create_sr_model("edsr_tiny", scales=(2,))
    pairs = validation_pairs(images.subset(["T91/gray.png"]), (2,))
    assert pairs[2][0][1].shape[0] == 1
    ours = validation_scores(model, pairs, with_ssim=True)[2]
    psnr, ssim = evaluate_sr(model, hr, 2).mean()
    assert ours["psnr"] == pytest.approx(psnr, abs=1e-9)
    assert ours["ssim"] == pytest.approx(ssim, abs=1e-9)


def test_a_resume_with_more_epochs_says_what_the_stretched_schedule_does_to_the_lr(
        mini_sr, tmp_path):
    """A finished cosine run extended from 1 to 2 epochs: the schedule spans 12 steps now,
    so at step 6 the rate is back at half its peak (it had decayed to the floor)."""
    run = tmp_path / "run"
    cfg = tiny_cfg(mini_sr, run, epochs=1, scales=(2,), schedule="cosine", warmup_steps=0,
                   min_lr_ratio=0.0)
    SRTrainer(cfg, quiet=True).fit()
    resumed = SRTrainer(SRTrainConfig(out=str(run)), resume=True, quiet=True,
                        changes={"epochs": 2})
    try:
        assert resumed.changes_applied == [
            "epochs 1 -> 2", "learning rate at step 6: 0 -> 0.0005 (the cosine schedule now "
            "spans 12 steps)"]
    finally:
        resumed.run.close()
    same = SRTrainer(SRTrainConfig(out=str(run)), resume=True, quiet=True)
    try:
        assert same.changes_applied == []
    finally:
        same.run.close()


def test_resuming_a_run_of_the_other_trainer_is_one_line(mini_sr, tiny_data, tmp_path):
    """`train --resume` on a train-sr folder (and the reverse) was a TypeError traceback
    from the config's constructor."""
    from resnets.train.loop import Trainer
    from tests.train.test_loop import tiny_cfg as classifier_cfg

    sr_run, cls_run = tmp_path / "sr", tmp_path / "cls"
    SRTrainer(tiny_cfg(mini_sr, sr_run, epochs=1, scales=(2,), steps_per_epoch=2),
              quiet=True).fit()
    Trainer(classifier_cfg(tiny_data, cls_run, epochs=1), quiet=True).fit()
    for command, run, kind in (("train", sr_run, "train-sr"), ("train-sr", cls_run, "train")):
        result = runner.invoke(app, [command, "--resume", str(run), "--epochs", "2"])
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        assert lines[0] == (f"error: cannot resume {run} as a `resnets {command}` run: it "
                            f"is a `resnets {kind}` run; resume it with `resnets {kind}`")


def test_scale_cycle_gives_a_repeated_scale_more_of_the_batches(mini_sr, tmp_path, monkeypatch):
    from resnets.data.sr import PatchSampler

    drawn = []
    real = PatchSampler.sample

    def recording(self, batch, scale, *args, **kwargs):
        drawn.append(scale)
        return real(self, batch, scale, *args, **kwargs)

    monkeypatch.setattr(PatchSampler, "sample", recording)
    result = runner.invoke(app, [*_cli_args(mini_sr, tmp_path / "run"), "--scales", "2,4",
                                 "--set", "scale_cycle=2,2,4"])
    assert result.exit_code == 0, result.output
    assert drawn == [2, 2, 4] * 4  # 2 epochs of 6 steps, the cycle across the epoch end
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["scale_cycle"] == [2, 2, 4] and saved["scales"] == [2, 4]
    for bad in ("2,2", "2,3,4"):  # a scale left out, or one the network does not serve
        result = runner.invoke(app, [*_cli_args(mini_sr, tmp_path / f"bad{bad}"), "--scales",
                                     "2,4", "--set", f"scale_cycle={bad}"])
        assert result.exit_code == 1 and result.output.strip() == (
            "error: scale_cycle must name each of the scales [2, 4] and no other, got "
            f"[{bad.replace(',', ', ')}]")
        assert not (tmp_path / f"bad{bad}").exists()
