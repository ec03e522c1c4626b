import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import resnets
from resnets.cli import app
from resnets.experiments.degradation import DegradationConfig, run_degradation, signal_report
from resnets.models.blocks import BasicBlock
from tests.synthetic import make_folder


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))


def test_tiny_experiment_records_every_field_and_writes_both_figures(tmp_path):
    data = make_folder(tmp_path / "data", per_class=(12, 3), size=8)
    out = tmp_path / "exp"
    result = CliRunner().invoke(app, [
        "experiment", "degradation", "--data", str(data), "--out", str(out), "--depths",
        "8,14", "--seeds", "0"])
    assert result.exit_code == 1 and "--depths takes two or more of" in result.output
    result = CliRunner().invoke(app, [
        "experiment", "degradation", "--data", str(data), "--out", str(out), "--depths",
        "20,32", "--seeds", "0", "--epochs", "2", "--subset-per-class", "6", "--amp", "none",
        "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["runs"]) == 4  # plain/resnet x 2 depths x 1 seed
    run = summary["runs"][0]
    for key in ("train_error", "train_clean_error", "val_error", "test_error", "train_loss"):
        assert len(run[key]) == 2, key
    assert len(run["signal_init"]) == 9 and len(run["signal_end"]) == 9  # plain20: 9 blocks
    assert set(run["signal_init"][0]["grad_norm"]) == {"conv1", "conv2"}
    assert [c["claim"] for c in summary["comparisons"]] == [
        "final training error plain32 > plain20", "final training error resnet32 < resnet20",
        "final training error resnet32 < plain32"]
    for c in summary["comparisons"]:
        assert c["seeds"] == [0] and not c["beyond_spread"]  # one seed: no spread to clear
    for fig in ("fig6_errors.png", "gradient_norms.png", "error_vs_depth.png", "depth_gap.png"):
        assert (out / fig).stat().st_size > 5000
    assert "final training error plain32 > plain20" in result.output


def test_signal_report_measures_each_block():
    model = resnets.create_model("plain20")
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    rows = signal_report(model, x, y, torch.device("cpu"), None)
    assert [r["index"] for r in rows] == list(range(1, 10))
    assert all(r["grad_norm_mean"] > 0 and r["activation_rms"] > 0 for r in rows)
    assert all(p.grad is None for p in model.parameters())


def test_zero_init_resnet56_starts_as_identity_blocks_plain_cannot():
    # With zero_init_residual every identity block returns its (non-negative) input exactly,
    # so a 56-layer ResNet starts as a shallow network; a plain net has no such state.
    res = resnets.create_model("resnet56", zero_init_residual=True)
    plain = resnets.create_model("plain56", zero_init_residual=True)
    x = torch.relu(torch.randn(2, 16, 8, 8))
    identity_blocks = [m for m in res.modules()
                       if isinstance(m, BasicBlock) and m.downsample is None]
    assert len(identity_blocks) == 25
    for block in identity_blocks[:8]:
        assert torch.equal(block(x), x)
    assert not torch.equal(plain.layer1[1](x), x)


def test_only_trains_the_named_networks_and_summarises_what_is_finished(tmp_path):
    """Several processes can share one --out, each training its own networks (on a GPU,
    the runs of one seed at once); the last one summarises them all."""
    data = make_folder(tmp_path / "data", per_class=(12, 3), size=8)
    out = tmp_path / "exp"
    base = ["experiment", "degradation", "--data", str(data), "--out", str(out), "--depths",
            "20,32", "--seeds", "0", "--epochs", "1", "--subset-per-class", "6", "--amp",
            "none", "--batch-size", "8"]
    res = CliRunner().invoke(app, [*base, "--only", "resnet20", "--set", "log_every=1"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["resnet20-seed0"]
    config = json.loads((out / "resnet20-seed0" / "config.json").read_text())
    assert config["log_every"] == 1
    res = CliRunner().invoke(app, [*base, "--only", "plain20,plain32,resnet32"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(r["net"] for r in summary["runs"]) == ["plain20", "plain32", "resnet20",
                                                         "resnet32"]
    bad = CliRunner().invoke(app, [*base, "--only", "resnet56"])
    assert bad.exit_code == 1 and "--only takes networks of --depths" in bad.output


def test_a_difference_counts_only_beyond_the_two_half_ranges_added():
    from resnets.experiments.degradation import DegradationConfig, summarize

    def rec(net, seed, err):
        return {"net": net, "seed": seed, "train_error": [err], "train_clean_error": [err],
                "test_error": [err]}

    # plain20 spread 0, plain56 spread +-1.0: margin 1.5 beats 0 + 1.0 (but not 2 x 1.0)
    records = [rec("plain20", 0, 10.0), rec("plain20", 1, 10.0),
               rec("plain56", 0, 10.5), rec("plain56", 1, 12.5),
               rec("resnet20", 0, 9.0), rec("resnet20", 1, 9.4),
               rec("resnet56", 0, 8.9), rec("resnet56", 1, 9.3)]
    cfg = DegradationConfig(data="x", out="y", depths=(20, 56), seeds=(0, 1))
    by_claim = {c["claim"]: c for c in summarize(cfg, records)["comparisons"]}
    plain = by_claim["final training error plain56 > plain20"]
    assert plain["half_range_sum"] == pytest.approx(1.0) and plain["margin"] == pytest.approx(1.5)
    assert plain["beyond_spread"]
    res = by_claim["final training error resnet56 < resnet20"]  # -0.1 against 0.2 + 0.2
    assert res["holds"] and not res["beyond_spread"]



def test_a_partial_summary_compares_only_the_seeds_both_networks_have():
    from resnets.cli import _claim_line
    from resnets.experiments.degradation import DegradationConfig, summarize

    def rec(net, seed, err):
        return {"net": net, "seed": seed, "train_error": [err], "train_clean_error": [err],
                "test_error": [err]}

    # resnet56 has only seed 0 so far: against resnet20's mean of two seeds (9.5) it would
    # look 0.6 lower with a bar of 0.5; on seed 0, the one both have, it is 0.1 higher
    records = [rec("resnet20", 0, 8.8), rec("resnet20", 1, 10.2), rec("resnet56", 0, 8.9),
               rec("plain20", 0, 12.0), rec("plain20", 1, 12.4),
               rec("plain56", 0, 40.0), rec("plain56", 1, 41.0)]
    cfg = DegradationConfig(data="x", out="y", depths=(20, 56), seeds=(0, 1))
    by_claim = {c["claim"]: c for c in summarize(cfg, records)["comparisons"]}
    res = by_claim["final training error resnet56 < resnet20"]
    assert res["seeds"] == [0] and res["margin"] == pytest.approx(0.1) and not res["holds"]
    one = by_claim["final training error resnet56 < plain56"]  # holds, but on one seed
    assert one["holds"] and not one["beyond_spread"] and one["half_range_sum"] == 0
    assert "seed 0 only: no spread to judge it by" in _claim_line(one)
    both = by_claim["final training error plain56 > plain20"]
    assert both["seeds"] == [0, 1] and both["beyond_spread"]


def test_clean_subset_claims_are_reported_beside_the_verdicts_not_in_their_place():
    from resnets.experiments.degradation import DegradationConfig, summarize

    def rec(net, seed, err, clean):
        return {"net": net, "seed": seed, "train_error": [50.0, err],
                "train_clean_error": [50.0, clean], "test_error": [50.0, err]}

    # augmented: resnet56 0.1 above resnet20; clean: 0.6 below, beyond 0.1 + 0.1
    records = [rec("plain20", s, 14.0, 12.5) for s in (0, 1)] + [
        rec("plain56", s, 47.0, 45.0) for s in (0, 1)] + [
        rec("resnet20", 0, 10.3, 9.4), rec("resnet20", 1, 10.3, 9.6),
        rec("resnet56", 0, 10.4, 8.8), rec("resnet56", 1, 10.4, 9.0)]
    cfg = DegradationConfig(data="x", out="y", depths=(20, 56), seeds=(0, 1))
    summary = summarize(cfg, records)
    verdict = {c["claim"]: c for c in summary["comparisons"]}
    clean = {c["claim"]: c for c in summary["comparisons_clean"]}
    assert not verdict["final training error resnet56 < resnet20"]["holds"]
    beside = clean["final clean training error resnet56 < resnet20"]
    assert beside["holds"] and beside["beyond_spread"]
    assert beside["margin"] == pytest.approx(-0.6)
    assert beside["half_range_sum"] == pytest.approx(0.2)
    assert [c["claim"].replace("clean ", "") for c in summary["comparisons_clean"]] == list(verdict)


def test_a_run_folder_in_another_precision_is_another_setting(tmp_path, monkeypatch):
    """bf16 and fp32 runs are never summarised together; amp=auto is compared as what it
    means on this machine (a folder from before runs stored it resolved, too)."""
    from resnets import devices
    from resnets.experiments.degradation import DegradationConfig, check_setting, train_config

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    cfg = DegradationConfig(data="x", out=str(tmp_path), depths=(20,), seeds=(0,), amp="auto")
    tcfg = train_config(cfg, "resnet20", 0)
    run = Path(tcfg.out)
    run.mkdir(parents=True)
    for saved_amp, refused in [("bf16", True), ("none", False), ("auto", False)]:
        (run / "config.json").write_text(json.dumps({**tcfg.to_dict(), "amp": saved_amp}))
        if refused:
            with pytest.raises(ValueError, match="amp 'bf16', asked 'none'"):
                check_setting(run, tcfg)
        else:
            check_setting(run, tcfg)


def test_any_recipe_field_makes_another_setting_but_where_it_runs_does_not(tmp_path):
    """Only ten fields were compared: a folder trained with another weight decay or
    milestones was summarised (or resumed) under this setting."""
    from resnets.experiments.degradation import DegradationConfig, check_setting, train_config

    cfg = DegradationConfig(data="x", out=str(tmp_path), depths=(20,), seeds=(0,), amp="none")
    tcfg = train_config(cfg, "resnet20", 0)
    run = Path(tcfg.out)
    run.mkdir(parents=True)
    saved = tcfg.to_dict()
    for change, refused in [({"weight_decay": 5e-4}, "weight_decay 0.0005"),
                            ({"milestones": [0.3, 0.6]}, "milestones"),
                            ({"momentum": 0.0}, "momentum"),
                            ({"device": "cuda", "compile": True, "workers": 8,
                              "data": "/elsewhere/cifar10", "checkpoint_every": 50}, None)]:
        (run / "config.json").write_text(json.dumps({**saved, **change}))
        if refused:
            with pytest.raises(ValueError, match=refused):
                check_setting(run, tcfg)
        else:
            check_setting(run, tcfg)


def test_an_extra_setting_of_a_field_the_experiment_sets_is_one_clear_error(tmp_path):
    """--set lr=0.05 was a TypeError traceback (paper_recipe got lr twice)."""
    from resnets.experiments.degradation import DegradationConfig, train_config

    cfg = DegradationConfig(data="x", out=str(tmp_path), extra={"lr": 0.05, "epochs": 3})
    with pytest.raises(ValueError, match="extra training settings set epochs, lr, which the "
                                         "experiment sets itself"):
        train_config(cfg, "plain20", 0)


def test_a_missing_dataset_or_no_epochs_fails_before_any_line_or_folder(tmp_path):
    lines: list[str] = []
    with pytest.raises(FileNotFoundError, match="dataset not found: /nope"):
        run_degradation(DegradationConfig(data="/nope", out=str(tmp_path / "a")),
                        log=lines.append)
    data = tmp_path / "cifar"
    (data / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="epochs must be at least 1, got 0"):
        run_degradation(DegradationConfig(data=str(data), out=str(tmp_path / "b"), epochs=0),
                        log=lines.append)
    assert lines == [] and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
