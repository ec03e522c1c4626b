"""A summary never mixes budgets: a run folder trained in another setting is refused."""

import json
import shutil

import pytest

from resnets.experiments.degradation import DegradationConfig, run_degradation, run_one
from tests.synthetic import make_folder


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))


def _cfg(data, out, **kw) -> DegradationConfig:
    base = {"data": str(data), "out": str(out), "depths": (20, 32), "seeds": (0,),
            "epochs": 1, "subset_per_class": 6, "amp": "none", "batch_size": 8}
    base.update(kw)
    return DegradationConfig(**base)


def test_a_finished_run_of_another_budget_is_refused_not_summarised(tmp_path):
    data = make_folder(tmp_path / "data", per_class=(12, 3), size=8)
    out = tmp_path / "exp"
    one = run_one(_cfg(data, out), "plain20", 0)
    assert one["epochs"] == [1]
    # asked for 2 epochs, the folder holds a finished 1-epoch run: it must not come back
    # labelled as the 2-epoch budget
    with pytest.raises(ValueError, match="epochs"):
        run_one(_cfg(data, out, epochs=2), "plain20", 0)
    # the same record copied without its folder (docs/degradation/full/<net>-seed<S>.json)
    bare = tmp_path / "bare"
    (bare / "plain20-seed0").mkdir(parents=True)
    shutil.copy(out / "plain20-seed0" / "degradation.json", bare / "plain20-seed0")
    with pytest.raises(ValueError, match="epochs"):
        run_one(_cfg(data, bare, epochs=2), "plain20", 0)
    # --only: the finished runs of other processes are read, and checked the same way
    with pytest.raises(ValueError, match="epochs"):
        run_degradation(_cfg(data, out, epochs=2, only=("resnet20",)), log=lambda *_: None)
    # the setting it was trained in still summarises
    assert run_one(_cfg(data, out), "plain20", 0) == one


def test_a_started_run_of_another_setting_is_not_resumed_in_its_own(tmp_path):
    data = make_folder(tmp_path / "data", per_class=(12, 3), size=8)
    out = tmp_path / "exp"
    run_one(_cfg(data, out), "plain20", 0)
    (out / "plain20-seed0" / "degradation.json").unlink()  # as if stopped before the end
    # resuming would continue with the folder's own setting (batch 8, 1 epoch) and record
    # it under the asked one (batch 4)
    with pytest.raises(ValueError, match="batch_size"):
        run_one(_cfg(data, out, batch_size=4), "plain20", 0)
    record = run_one(_cfg(data, out), "plain20", 0)  # its own setting resumes
    assert record["epochs"] == [1]
    assert json.loads((out / "plain20-seed0" / "config.json").read_text())["batch_size"] == 8


def test_summarize_refuses_records_of_different_lengths():
    from resnets.experiments.degradation import summarize

    def rec(net, seed, n):
        return {"net": net, "seed": seed, "train_error": [10.0] * n,
                "train_clean_error": [10.0] * n, "test_error": [10.0] * n}

    cfg = DegradationConfig(data="x", out="y", depths=(20, 56), seeds=(0, 1))
    with pytest.raises(ValueError, match="budgets"):
        summarize(cfg, [rec("resnet20", 0, 29), rec("resnet56", 0, 58)])
