"""Exact mid-epoch resume with gradient accumulation, the resumed epoch's metrics row, and
accumulation that would never reach an optimizer step."""

import json
import warnings

import pytest
import torch

import resnets.train.loop as loop
from resnets.train import Trainer
from resnets.train.run_folder import load_training_state
from tests.train.test_loop import tiny_cfg


class _Crash(Exception):
    pass


def _crash_after_first_save(monkeypatch):
    """The next run dies right after its first checkpoint is written (a kill mid-epoch)."""
    real = loop.Trainer._save

    def save(self, *args):
        real(self, *args)
        monkeypatch.setattr(loop.Trainer, "_save", real)
        raise _Crash

    monkeypatch.setattr(loop.Trainer, "_save", save)


def _rows(run):
    drop = ("images_per_s", "epoch_time_s")
    return [{k: v for k, v in json.loads(line).items() if k not in drop}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _interrupted_and_reference(tiny_data, tmp_path, monkeypatch, **kw):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    Trainer(tiny_cfg(tiny_data, ref, **kw), quiet=True).fit()
    _crash_after_first_save(monkeypatch)
    with pytest.raises(_Crash):
        Trainer(tiny_cfg(tiny_data, cut, **kw), quiet=True).fit()
    state = load_training_state(cut / "last.pt")
    assert state["epoch"] == 0 and state["step_in_epoch"] > 0  # killed mid-epoch
    Trainer(tiny_cfg(tiny_data, cut), resume=True, quiet=True).fit()
    return ref, cut


def test_mid_epoch_resume_with_accumulation_is_bitwise_equal(tiny_data, tmp_path,
                                                             monkeypatch):
    # 6 batches an epoch, 2 per optimizer step; a checkpoint every step (every batch, before
    # the fix) lands in the middle of an accumulation window, whose gradients it did not keep
    ref, cut = _interrupted_and_reference(tiny_data, tmp_path, monkeypatch,
                                          accum_steps=2, checkpoint_every=1)
    a, b = load_training_state(ref / "last.pt"), load_training_state(cut / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert _rows(ref) == _rows(cut)


def test_mid_epoch_resume_keeps_the_epochs_training_loss(tiny_data, tmp_path, monkeypatch):
    # the resumed epoch's row must cover the whole epoch, not only the batches after the
    # restart; without a validation split it is also what selects best.pt
    ref, cut = _interrupted_and_reference(tiny_data, tmp_path, monkeypatch,
                                          checkpoint_every=2, val_fraction=0.0)
    assert _rows(ref) == _rows(cut)
    assert load_training_state(ref / "best.pt")["epoch"] == \
        load_training_state(cut / "best.pt")["epoch"]


def test_accumulation_longer_than_an_epoch_is_refused(tiny_data, tmp_path):
    # 54 training images in batches of 8: 6 batches an epoch, never 8 to accumulate, so
    # not one optimizer step would be taken and the run would "finish" untrained
    with pytest.raises(ValueError, match="accum_steps"):
        Trainer(tiny_cfg(tiny_data, tmp_path / "run", accum_steps=8), quiet=True)
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("in_memory", ["yes", "no"])
def test_unreadable_training_images_are_counted_in_the_result(tmp_path, in_memory):
    # README: "Unreadable images are skipped ... and counted in result.json", whether the
    # dataset is decoded into memory or streamed from disk
    from tests.synthetic import make_folder

    data = make_folder(tmp_path / "data", per_class=(8, 2))
    (data / "train" / "a" / "broken.png").write_bytes(b"not an image")
    cfg = tiny_cfg(data, tmp_path / "run", epochs=2, in_memory=in_memory, workers=0,
                   val_fraction=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = Trainer(cfg, quiet=True).fit()
    assert result["skipped_images"] == 1
    assert json.loads((tmp_path / "run" / "result.json").read_text())["skipped_images"] == 1


def test_streamed_mid_epoch_resume_with_workers_is_bitwise_equal(tiny_data, tmp_path,
                                                                 monkeypatch):
    # a dataset streamed from disk (the large ones, where mid-epoch checkpoints matter) with
    # DataLoader workers: each image's random crop and flip must not depend on which worker
    # drew it, or on how many images that worker had drawn before the restart
    ref, cut = _interrupted_and_reference(tiny_data, tmp_path, monkeypatch, in_memory="no",
                                          workers=2, checkpoint_every=2)
    a, b = load_training_state(ref / "last.pt"), load_training_state(cut / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert _rows(ref) == _rows(cut)


def test_streamed_resume_after_a_batch_of_unreadable_files_is_bitwise_equal(tmp_path,
                                                                           monkeypatch):
    # a streamed batch of unreadable files only was left out of the batches, so the loop's
    # count ran one behind the sampler: a checkpoint after it resumed one batch early
    from resnets.train.data import build_data
    from tests.synthetic import make_folder

    data = make_folder(tmp_path / "data", per_class=(24, 6))
    cfg = tiny_cfg(data, tmp_path / "probe", in_memory="no", workers=0)
    train = build_data(cfg, torch.device("cpu")).train
    _, _, idx = next(iter(train.batches(cfg.seed, 0, 0, torch.Generator())))
    assert len(idx) == 8
    for i in idx.tolist():  # the first batch of epoch 1: every file unreadable
        train.dataset.paths[i].write_bytes(b"not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref, cut = _interrupted_and_reference(data, tmp_path, monkeypatch, in_memory="no",
                                              workers=0, checkpoint_every=2)
    a, b = load_training_state(ref / "last.pt"), load_training_state(cut / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert _rows(ref) == _rows(cut)


@pytest.mark.parametrize("free_at_start,free_at_resume", [(10**12, 1), (1, 10**12)])
def test_resume_keeps_the_automatic_memory_choice_of_the_run(tiny_data, tmp_path,
                                                             monkeypatch, free_at_start,
                                                             free_at_resume):
    """in_memory=auto is decided once, when the run starts: a resume with more or less
    memory free must not switch pipelines (augmentation, and the split when files are
    unreadable)."""
    import resnets.train.data as train_data

    monkeypatch.setattr(train_data, "available_memory", lambda: free_at_start)
    cfg = tiny_cfg(tiny_data, tmp_path / "run", epochs=1, in_memory="auto", workers=0)
    first = Trainer(cfg, quiet=True)
    first.fit()
    assert first.in_memory == (free_at_start > 1)
    monkeypatch.setattr(train_data, "available_memory", lambda: free_at_resume)
    resumed = Trainer(tiny_cfg(tiny_data, tmp_path / "run"), resume=True, quiet=True,
                      changes={"epochs": 2})
    try:
        assert resumed.in_memory == first.in_memory, resumed.data_reason
    finally:
        resumed.run.close()


@pytest.mark.parametrize("native_at_start", [True, False])
def test_amp_auto_is_stored_as_what_it_was_and_kept_on_resume(tiny_data, tmp_path,
                                                              monkeypatch, native_at_start):
    """amp=auto means bf16 on a CPU with native bf16 and fp32 elsewhere: a run stores what
    it meant where the run started, and resumed on the other kind of CPU keeps it (its
    numerics do not change half-way)."""
    from resnets import devices

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native_at_start)
    first = Trainer(tiny_cfg(tiny_data, tmp_path / "run", epochs=1, amp="auto"), quiet=True)
    first.fit()
    stored = "bf16" if native_at_start else "none"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["amp"] == stored
    assert load_training_state(tmp_path / "run" / "last.pt")["config"]["amp"] == stored
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: not native_at_start)
    resumed = Trainer(tiny_cfg(tiny_data, tmp_path / "run"), resume=True, quiet=True,
                      changes={"epochs": 2})
    try:
        assert resumed.cfg.amp == stored
        assert resumed.amp == (torch.bfloat16 if native_at_start else None)
    finally:
        resumed.run.close()


def test_an_epoch_trains_only_the_batches_of_whole_accumulation_windows(tiny_data, tmp_path):
    """6 batches an epoch, 4 per optimizer step: one step, from batches 1-4; batches 5 and
    6 would only be computed for their gradient to be dropped at the next epoch's start."""
    trainer = Trainer(tiny_cfg(tiny_data, tmp_path / "run", epochs=2, accum_steps=4),
                      quiet=True)
    assert len(trainer.train_data) == 6 and trainer.steps_per_epoch == 1
    calls = []
    trainer.model.register_forward_pre_hook(
        lambda module, args: calls.append(len(args[0])) if module.training else None)
    trainer.fit()
    assert len(calls) == 2 * 4 and trainer.scheduler.last_epoch == 2


def test_a_stop_right_after_an_epochs_checkpoint_keeps_its_metrics_row(tiny_data, tmp_path,
                                                                       monkeypatch):
    """The epoch's row is logged before its checkpoint: stopped between the two before,
    the resumed run started past an epoch whose row was never written."""
    run = tmp_path / "run"
    _crash_after_first_save(monkeypatch)  # the first checkpoint: epoch 1's end
    with pytest.raises(_Crash):
        Trainer(tiny_cfg(tiny_data, run), quiet=True).fit()
    assert load_training_state(run / "last.pt")["epoch"] == 1
    Trainer(tiny_cfg(tiny_data, run), resume=True, quiet=True).fit()
    assert [r["epoch"] for r in _rows(run)] == [1, 2]


@pytest.mark.parametrize("saved", ["world", "ranks"])
def test_resume_with_another_number_of_processes_is_refused(tiny_data, tmp_path, saved):
    """Steps per epoch, the schedule and the data sharding depend on the process count: a
    2-process checkpoint does not resume in one process (``ranks``: a checkpoint from before
    the count was saved, told by its per-rank states)."""
    run = tmp_path / "run"
    Trainer(tiny_cfg(tiny_data, run, epochs=1), quiet=True).fit()
    state = load_training_state(run / "last.pt")
    assert state["world"] == 1
    if saved == "world":
        state["world"] = 2
    else:
        del state["world"]
        state["ranks"] = [{"generator": state["generator"], "rng": state["rng"]}] * 2
    torch.save(state, run / "last.pt")
    with pytest.raises(ValueError, match=r"trained by 2 process\(es\), this is 1; resume it "
                                         r"with 2 processes"):
        Trainer(tiny_cfg(tiny_data, run), resume=True, quiet=True, changes={"epochs": 2})


def test_resume_keeps_the_normalization_of_pretrained_weights_that_are_gone(tiny_data,
                                                                           tmp_path):
    """Fine-tuned from weights with their own mean/std, a run resumed after that file was
    moved keeps those statistics (it fell back to the model family's, silently)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    Trainer(tiny_cfg(tiny_data, tmp_path / "src", epochs=1), quiet=True).fit()
    src = tmp_path / "src" / "model.safetensors"
    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    pre = json.loads(meta["preprocess"])
    pre["mean"], pre["std"] = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    source = tmp_path / "own-stats.safetensors"
    save_file(load_file(str(src)), str(source), {**meta, "preprocess": json.dumps(pre)})
    run = tmp_path / "run"
    first = Trainer(tiny_cfg(tiny_data, run, epochs=1, pretrained=str(source)), quiet=True)
    assert first.preprocessing.mean == (0.5, 0.5, 0.5)
    first.fit()
    source.unlink()
    resumed = Trainer(tiny_cfg(tiny_data, run), resume=True, quiet=True, changes={"epochs": 2})
    try:
        assert resumed.preprocessing.mean == (0.5, 0.5, 0.5)
        assert resumed.preprocessing.std == (0.25, 0.25, 0.25)
    finally:
        resumed.run.close()


def test_an_unreadable_batch_that_ends_an_accumulation_window_drops_the_window(tmp_path,
                                                                              monkeypatch):
    """Streamed with accum_steps=2, batch 2 of the epoch (the first window's end) is all
    unreadable files: the window takes no step, and its gradients must not leak into the
    next window (they did: the next step summed up to three batches' gradients)."""
    from resnets.train.data import build_data
    from tests.synthetic import make_folder

    data = make_folder(tmp_path / "data", per_class=(24, 6))
    cfg = tiny_cfg(data, tmp_path / "run", epochs=1, in_memory="no", workers=0, accum_steps=2)
    train = build_data(cfg, torch.device("cpu")).train
    batches = iter(train.batches(cfg.seed, 0, 0, torch.Generator()))
    next(batches)
    _, _, idx = next(batches)
    for i in idx.tolist():
        train.dataset.paths[i].write_bytes(b"not an image")
    starts = []  # at each window's first backward: were the gradients empty?
    real = loop.Trainer._grad_sync

    def spy(self, window_ends):
        if not window_ends:
            starts.append(all(p.grad is None for p in self.model.parameters()))
        return real(self, window_ends)

    monkeypatch.setattr(loop.Trainer, "_grad_sync", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(cfg, quiet=True).fit()
    assert len(starts) >= 3 and all(starts), starts
