"""The bundled CIFAR-10 weights are what their provenance records say they are."""

import hashlib
import json

import pytest

import resnets
from resnets.tasks.classify import evaluate_folder
from resnets.weights import load_classifier
from resnets.weights.records import BUNDLED_DIR, bundled_records
from tests.conftest import shared_path

PROVENANCE = sorted((BUNDLED_DIR / "provenance").glob("*.json"))


def test_every_bundled_file_has_provenance_and_a_record():
    files = sorted(p.name for p in BUNDLED_DIR.glob("*.safetensors"))
    assert files == sorted(json.loads(p.read_text())["file"] for p in PROVENANCE)
    assert files == sorted(r.filename for r in bundled_records())


@pytest.mark.parametrize("prov", PROVENANCE, ids=[p.stem for p in PROVENANCE])
def test_bundled_sha256_and_subset_accuracy_match_the_record(prov):
    rec = json.loads(prov.read_text())
    path = BUNDLED_DIR / rec["file"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == rec["sha256"]
    assert [r.sha256 for r in bundled_records() if r.filename == rec["file"]] == [digest]
    for key in ("dataset", "recipe", "epochs", "seed", "test_acc", "parameters", "command"):
        assert rec[key] not in (None, ""), key
    # a run that continued earlier ones lists them, and its epoch total counts them all
    earlier = rec.get("earlier_stages", [])
    assert all(e["command"] and e["epochs"] > 0 for e in earlier)
    assert rec.get("total_epochs", rec["epochs"]) == rec["epochs"] + sum(
        e["epochs"] for e in earlier)
    # a validation accuracy exists exactly when a validation split was held out
    assert (rec["val_acc"] is not None) == (rec["recipe"]["val_fraction"] > 0)
    test_dir = shared_path("cifar10", "test")
    clf = load_classifier(path, rec["model"])
    report = evaluate_folder(clf, test_dir, limit_per_class=200)
    assert report.n == rec["test_subset_n"] == 2000
    assert report.top1 == pytest.approx(rec["test_subset_acc"], abs=0.051)  # <= 1 image


@pytest.mark.parametrize("prov", PROVENANCE, ids=[p.stem for p in PROVENANCE])
def test_pretrained_true_loads_the_bundled_weights(prov):
    rec = json.loads(prov.read_text())
    model = resnets.create_model(rec["model"], pretrained=True)
    clf = load_classifier(BUNDLED_DIR / rec["file"], rec["model"])
    for k, v in clf.model.state_dict().items():
        assert model.state_dict()[k].equal(v), k


@pytest.mark.slow
@pytest.mark.parametrize("prov", PROVENANCE, ids=[p.stem for p in PROVENANCE])
def test_bundled_full_test_accuracy_is_recomputed(prov):
    rec = json.loads(prov.read_text())
    clf = load_classifier(BUNDLED_DIR / rec["file"], rec["model"])
    report = evaluate_folder(clf, shared_path("cifar10", "test"))
    assert report.n == 10000
    assert report.top1 == pytest.approx(rec["test_acc"], abs=0.011)  # <= 1 image
    assert report.top5 == pytest.approx(rec["test_top5"], abs=0.011)


@pytest.mark.parametrize(("model", "target"), [("resnet20", 88.0), ("resnet56", 90.0)])
def test_bundled_weights_meet_the_issue_targets(model, target):
    """Issue #3: ResNet-20 >= 88.0% and ResNet-56 >= 90.0% single view on the full
    cifar10/test, as recorded by `resnets eval` (the slow test above recomputes the
    recorded number; the 2,000-image subset test recomputes part of it in every run)."""
    rec = json.loads((BUNDLED_DIR / "provenance" / f"{model}_cifar10.json").read_text())
    assert rec["test_n"] == 10000 and rec["test_acc"] >= target


def test_no_bundled_file_or_provenance_names_a_machine_path():
    """Issue #20, item 11: provenance names runs (``r20-full-e40``), not the training
    machine's folders."""
    from safetensors import safe_open

    from resnets.weights.provenance import machine_paths

    files = sorted(BUNDLED_DIR.rglob("*.safetensors"))
    assert len(files) >= 3
    for path in files:
        with safe_open(str(path), "pt") as f:
            assert machine_paths(f.metadata() or {}) == [], path.name
    for prov in sorted(BUNDLED_DIR.rglob("*.json")):
        assert machine_paths({"file": prov.read_text()}) == [], prov.name
