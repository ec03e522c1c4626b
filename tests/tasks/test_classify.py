import json

import pytest
from typer.testing import CliRunner

from resnets.cli import app
from resnets.tasks.classify import evaluate_folder, predict
from resnets.train import Trainer, paper_recipe
from resnets.weights import load_classifier
from tests.synthetic import make_folder

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    make_folder(root, per_class=(24, 6))
    out = root / "run"
    import os

    os.environ["RESNETS_CACHE"] = str(root / "cache")
    cfg = paper_recipe(model="resnet20", data=str(root), out=str(out), epochs=3, batch_size=8,
                       lr=0.05, amp="none", val_fraction=0.25, channels_last=False)
    Trainer(cfg, quiet=True).fit()
    return root, out / "model.safetensors"


def test_eval_json_has_top1_top5_n_per_class(trained, tmp_path):
    root, weights = trained
    result = runner.invoke(app, ["eval", "--weights", str(weights), "--data", str(root),
                                 "--json", "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n"] == 18 and set(report["per_class"]) == {"a", "b", "c"}
    assert 0 <= report["top1"] <= report["top5"] == 100.0  # 3 classes: top-5 covers all
    assert (tmp_path / "ev" / "confusion.csv").read_text().startswith("true \\ predicted,a,b,c")
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000


def test_eval_matches_training_result(trained):
    root, weights = trained
    clf = load_classifier(weights)
    report = evaluate_folder(clf, root)
    result = json.loads((weights.parent / "result.json").read_text())
    assert report.top1 == pytest.approx(result["test_acc"], abs=1e-6)
    assert report.confusion.sum().item() == 18


def test_eval_class_mismatch_and_wrong_architecture(trained, tmp_path):
    root, weights = trained
    other = make_folder(tmp_path / "other", classes=("x", "y", "z"), per_class=(1, 1))
    with pytest.raises(ValueError, match="do not match the model's classes"):
        evaluate_folder(load_classifier(weights), other / "test")
    with pytest.raises(ValueError, match="do not fit resnet56"):
        load_classifier(weights, "resnet56")


def test_predict_walks_folders_and_reports_bad_files(trained, tmp_path):
    root, weights = trained
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    preds, errors = predict([root / "test" / "a", bad], weights, top_k=2)
    assert len(preds) == 6 and all(len(p.top) == 2 for p in preds)
    assert abs(sum(v for _, v in preds[0].top) - 1.0) < 1.0  # probabilities, not logits
    assert len(errors) == 1 and "broken.png" in errors[0]


def test_predict_cli_exit_code_and_csv(trained, tmp_path):
    root, weights = trained
    csv_path = tmp_path / "p.csv"
    good = root / "test" / "b" / "000.png"
    result = runner.invoke(app, ["predict", str(good), str(tmp_path / "missing.jpg"),
                                 "--weights", str(weights), "--json", "--csv", str(csv_path)])
    assert result.exit_code == 1
    assert f"error: {tmp_path / 'missing.jpg'}: no such file" in result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("{"))
    assert json.loads(line)["path"] == str(good)
    assert csv_path.read_text().splitlines()[0] == "path,rank,class,probability"
    ok = runner.invoke(app, ["predict", str(good), "--weights", str(weights)])
    assert ok.exit_code == 0


@pytest.mark.parametrize("backend", ["onnxruntime", "int8"])
def test_predict_backends_agree_with_torch(trained, backend):
    root, weights = trained
    files = sorted((root / "test").rglob("*.png"))
    ref, _ = predict(files, weights, top_k=1)
    other, errors = predict(files, weights, top_k=1, backend=backend,
                            calibration=root / "train")
    assert errors == [] and [p.path for p in other] == [p.path for p in ref]
    agree = sum(a.top[0][0] == b.top[0][0] for a, b in zip(ref, other, strict=True))
    assert agree >= (len(ref) if backend == "onnxruntime" else len(ref) - 2)
    if backend == "onnxruntime":
        assert all(abs(a.top[0][1] - b.top[0][1]) < 1e-4 for a, b in zip(ref, other,
                                                                          strict=True))


def test_predict_rejects_unknown_backend(trained):
    _, weights = trained
    result = runner.invoke(app, ["predict", "x.png", "--weights", str(weights), "--backend",
                                 "tpu"])
    assert result.exit_code == 1 and ("--backend must be one of torch, onnxruntime, int8, "
                                      "openvino, openvino-int8, got 'tpu'") in result.output
