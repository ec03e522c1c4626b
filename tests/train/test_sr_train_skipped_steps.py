"""train-sr's training loss is the mean over the steps it trained on: a skipped non-finite
step is not counted as a zero loss (the classification trainer does not count it either)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resnets.train.sr import SRTrainConfig, SRTrainer


@pytest.fixture()
def sr_root(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(8):
        folder = tmp_path / "sr" / ("T91" if i < 4 else "BSD200")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
    return tmp_path / "sr"


def test_train_loss_is_the_mean_of_the_finite_steps(sr_root, tmp_path, monkeypatch):
    real = F.l1_loss
    seen: list[float] = []

    def poisoned(*args, **kwargs):  # the 3rd training loss of the run is NaN
        loss = real(*args, **kwargs)
        if len(seen) == 2 and not poisoned.done:
            poisoned.done = True
            return loss * float("nan")
        seen.append(loss.item())
        return loss

    poisoned.done = False
    monkeypatch.setattr(F, "l1_loss", poisoned)
    cfg = SRTrainConfig(model="edsr_tiny", data=str(sr_root), out=str(tmp_path / "run"),
                        scales=(2,), patch_size=16, batch_size=2, epochs=1,
                        steps_per_epoch=6, lr=1e-3, val_count=2, report_sets=(), seed=0)
    SRTrainer(cfg, quiet=True).fit()
    assert poisoned.done and len(seen) == 5  # one of the 6 steps skipped
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert row["train_loss"] == pytest.approx(sum(seen) / len(seen), rel=1e-6)
    assert torch.isfinite(torch.tensor(row["train_loss"]))
    # the cosine follows the step index, skipped steps included: it ends at 0 at step 6
    assert row["lr"] == pytest.approx(0.0, abs=1e-12)


def test_a_skipped_first_step_still_moves_the_schedule_without_a_warning(sr_root, tmp_path,
                                                                          monkeypatch):
    import warnings

    real = F.l1_loss
    calls = [0]

    def first_nan(*args, **kwargs):
        calls[0] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls[0] == 1 else loss

    monkeypatch.setattr(F, "l1_loss", first_nan)
    cfg = SRTrainConfig(model="edsr_tiny", data=str(sr_root), out=str(tmp_path / "run"),
                        scales=(2,), patch_size=16, batch_size=2, epochs=1,
                        steps_per_epoch=3, lr=1e-3, val_count=2, report_sets=(), seed=0,
                        schedule="step", step_every=1)
    trainer = SRTrainer(cfg, quiet=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch's "scheduler before optimizer" warning
        trainer.fit()
    assert trainer.scheduler.last_epoch == 3
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 / 8)


def test_a_run_stopped_after_a_skipped_step_resumes_with_the_same_train_loss(
        sr_root, tmp_path, monkeypatch):
    import resnets.data.sr as data_sr

    real_loss, real_sample = F.l1_loss, data_sr.PatchSampler.sample
    calls = {"loss": 0, "sample": 0, "stop_at": None}

    def poisoned(*args, **kwargs):  # the 2nd training loss of each run is NaN
        calls["loss"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["loss"] == 2 else loss

    def stopping_sample(self, *a, **k):  # stopped while drawing the 6th batch
        calls["sample"] += 1
        if calls["sample"] == calls["stop_at"]:
            raise KeyboardInterrupt
        return real_sample(self, *a, **k)

    monkeypatch.setattr(F, "l1_loss", poisoned)
    monkeypatch.setattr(data_sr.PatchSampler, "sample", stopping_sample)

    def cfg(out):
        return SRTrainConfig(model="edsr_tiny", data=str(sr_root), out=str(out), scales=(2,),
                             patch_size=16, batch_size=2, epochs=1, steps_per_epoch=6,
                             lr=1e-3, val_count=2, report_sets=(), seed=0,
                             checkpoint_every=4)

    SRTrainer(cfg(tmp_path / "ref"), quiet=True).fit()
    calls.update(loss=0, sample=0, stop_at=6)
    with pytest.raises(KeyboardInterrupt):
        SRTrainer(cfg(tmp_path / "cut"), quiet=True).fit()
    calls.update(loss=10, stop_at=None)  # the resumed part has no NaN
    SRTrainer(cfg(tmp_path / "cut"), resume=True, quiet=True).fit()
    ref, cut = (json.loads((tmp_path / d / "metrics.jsonl").read_text()) for d in ("ref", "cut"))
    assert cut["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-6)
