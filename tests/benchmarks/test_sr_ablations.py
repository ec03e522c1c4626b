"""benchmarks/sr_ablations.py end to end at a toy size: two variants, skip, resume, tables."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import resnets.data.sr as data_sr

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sr_ablations.py"


@pytest.fixture(scope="module")
def ablations():
    spec = importlib.util.spec_from_file_location("sr_ablations", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def toy_sets(tmp_path_factory):
    """T91/ and BSD200/ of a few smooth random images just over a 96-pixel patch, and a
    Set5/ of two HR images (scored at every scale, their LR made on the fly)."""
    root = tmp_path_factory.mktemp("sr")
    rng = np.random.default_rng(0)

    def picture(h, w):
        coarse = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        return Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)

    for name, count in (("T91", 3), ("BSD200", 3), ("matlab_ref/Set5", 2)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            picture(100 + 4 * i, 104).save(root / name / f"{i}.png")
    return root


def _args(data, out, *extra):
    return ["--data", str(data), "--out", str(out), "--variants", "reference,x2-only-third",
            "--model", "edsr_tiny", "--steps", "6", "--epoch-steps", "2", "--warmup-steps",
            "0", "--val-count", "2", "--report", "Set5", "--epoch-report", "Set5",
            "--checkpoint-every", "1", "--threads", "1", "--quiet", *extra]


def test_two_variants_train_skip_resume_and_tabulate(ablations, toy_sets, tmp_path,
                                                     monkeypatch, capsys):
    out = tmp_path / "abl"
    real_sample = data_sr.PatchSampler.sample
    calls = {"n": 0}

    def interrupted(self, *a, **k):  # the 5th batch of the first variant is never drawn
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_sample(self, *a, **k)

    monkeypatch.setattr(data_sr.PatchSampler, "sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ablations.main(_args(toy_sets, out))
    assert (out / "reference" / "last.pt").exists()
    assert not (out / "reference" / "result.json").exists()
    monkeypatch.setattr(data_sr.PatchSampler, "sample", real_sample)

    assert ablations.main(_args(toy_sets, out, "--plot")) == 0
    assert "reference: resuming 6 steps" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    ref, x2 = summary["variants"]["reference"], summary["variants"]["x2-only-third"]
    assert (ref["steps"], x2["steps"]) == (6, 2)  # x2 alone: the reference's x2 steps
    assert set(ref["psnr"]) == {f"{w}_x{s}" for w in ("val", "Set5") for s in (2, 3, 4)}
    assert set(x2["psnr"]) == {"val_x2", "Set5_x2"}
    assert x2["delta"]["val_x2"] == pytest.approx(x2["psnr"]["val_x2"] - ref["psnr"]["val_x2"])
    assert all(v == 0 for v in ref["delta"].values())
    assert ref["wall_s"] > 0 and ref["train_steps_per_s"] > 0 and not summary["unfinished"]
    rows = [json.loads(r) for r in (out / "reference" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6] and "Set5_psnr_x3" in rows[-1]
    configs = [json.loads((out / n / "config.json").read_text())
               for n in ("reference", "x2-only-third")]
    assert configs[0]["val_images"] == configs[1]["val_images"]  # the same held-out images
    assert configs[1]["scales"] == [2] and configs[1]["epochs"] == 1
    table = (out / "summary.md").read_text()
    assert "| reference | 6 |" in table and "| x2-only-third | 2 |" in table
    assert (out / "curves.png").stat().st_size > 0

    done = (out / "reference" / "result.json").stat().st_mtime_ns
    assert ablations.main(_args(toy_sets, out)) == 0  # everything finished: nothing trains
    assert "reference: finished before, skipped" in capsys.readouterr().out
    assert (out / "reference" / "result.json").stat().st_mtime_ns == done

    assert ablations.main(_args(toy_sets, out, "--lr", "0.01")) == 1
    assert "was started with another config (lr" in capsys.readouterr().err


def test_a_budget_that_splits_into_no_whole_epochs_is_refused(ablations, toy_sets, tmp_path,
                                                             capsys):
    args = _args(toy_sets, tmp_path / "abl")
    args[args.index("--steps") + 1] = "9"  # x2-only-third would train 3 steps: not 2k
    assert ablations.main(args) == 1
    assert "expected a multiple of --epoch-steps 2" in capsys.readouterr().err
    assert not (tmp_path / "abl").exists()


def test_every_default_variant_builds_a_valid_config(ablations, toy_sets):
    args = ablations.parse_args(["--data", str(toy_sets)])
    val = ("T91/0.png",)
    configs = {n: ablations.variant_config(n, args, val) for n in ablations.VARIANTS}
    for cfg in configs.values():
        cfg.validate()
    ref = configs["reference"]
    assert (ref.loss, ref.augment, ref.schedule, ref.patch_size, ref.batch_size, ref.scales,
            ref.amp, ref.total_steps) == ("l1", "dihedral", "cosine", 96, 16, (2, 3, 4),
                                          "bf16", 3000)
    for name in ("patch48-batch64", "patch128-batch9"):  # the same pixels per step
        cfg = configs[name]
        assert cfg.patch_size ** 2 * cfg.batch_size == 96 ** 2 * 16
    assert configs["step-lr"].step_every == 1000
    assert configs["x2-only-third"].total_steps == 1000
    assert configs["x2-only-third"].warmup_steps == ref.warmup_steps // 3
    changed = {n: {k for k, v in c.to_dict().items() if v != ref.to_dict()[k]} - {"out"}
               for n, c in configs.items()}
    assert changed["l2"] == {"loss"} and changed["augment-flip"] == {"augment"}
    assert changed["seed-1"] == {"seed"}  # val_images stay: scored on the same images
    assert changed["fp32"] == {"amp"} and configs["fp32"].amp == "none"


def test_estimate_times_a_few_steps_and_leaves_no_runs(ablations, toy_sets, tmp_path, capsys):
    out = tmp_path / "abl"
    args = _args(toy_sets, out, "--estimate", "2")
    args[args.index("--variants") + 1] = "x2-only-third"
    assert ablations.main(args) == 0
    printed = capsys.readouterr().out
    assert "x2-only-third" in printed and "2 steps ~" in printed and "all 1: ~" in printed
    assert not out.exists()


def test_a_run_started_before_a_layout_option_still_matches_its_variant(ablations, toy_sets):
    """The runs of 2026-11-30 were started before channels_last (and compile) existed: their
    config.json lacks those fields, which change how a step runs, not what it computes."""
    args = ablations.parse_args(["--data", str(toy_sets)])
    cfg = ablations.variant_config("reference", args, ("T91/0.png",))
    saved = json.loads(json.dumps(cfg.to_dict()))
    for name in ("channels_last", "compile", "compile_mode"):
        del saved[name]
    assert ablations._mismatch(saved, cfg) == []
    saved["loss"], saved["epochs"] = "l2", 1
    assert len(ablations._mismatch(saved, cfg)) == 2
