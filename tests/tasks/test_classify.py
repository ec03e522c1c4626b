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
    with pytest.MonkeyPatch.context() as mp:  # this module's cache, undone after it
        mp.setenv("RESNETS_CACHE", str(root / "cache"))
        cfg = paper_recipe(model="resnet20", data=str(root), out=str(out), epochs=3,
                           batch_size=8, lr=0.05, amp="none", val_fraction=0.25,
                           channels_last=False)
        Trainer(cfg, quiet=True).fit()
        yield root, out / "model.safetensors"


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
    # nothing classified: an existing CSV is left as it was (it was cut to its header)
    csv_path.write_text("earlier results\n")
    none = runner.invoke(app, ["predict", str(tmp_path / "missing.jpg"), "--weights",
                               str(weights), "--csv", str(csv_path)])
    assert none.exit_code == 1 and f"no predictions: {csv_path} not written" in none.stderr
    assert csv_path.read_text() == "earlier results\n"


@pytest.mark.parametrize("backend", ["onnxruntime", "onnxruntime-int8"])
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
    assert result.exit_code == 1 and ("--backend must be one of auto, int8, torch, optimized, "
                                      "onnxruntime, onnxruntime-int8, openvino, openvino-int8, "
                                      "got 'tpu'") in result.output


def test_predict_cli_int8_names_its_backend_and_calibrates_once(trained, monkeypatch,
                                                                tmp_path):
    pytest.importorskip("onnxruntime")
    from resnets.export import backends, int8

    root, weights = trained
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(backends, "installed", lambda module: module in {"onnxruntime",
                                                                          "onnx"})
    args = ["predict", str(root / "test"), "--weights", str(weights), "--backend", "int8",
            "--json", "--top-k", "1"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "note: --backend int8 runs onnxruntime-int8 (the fastest int8 backend " \
           "installed)" in first.output

    def calibrate_again(*args, **kwargs):
        raise AssertionError("the second run calibrated again")

    monkeypatch.setattr(int8, "quantized_session", calibrate_again)
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output

    def rows(result):
        return [json.loads(ln) for ln in result.output.splitlines() if ln.startswith("{")]

    assert len(rows(first)) == 18 and rows(second) == rows(first)
    assert len(list((tmp_path / "cache" / "onnxruntime").glob("*.onnx"))) == 1


def _nncf_fails(monkeypatch) -> None:
    """Make NNCF raise inside quantization, as it does on a graph it cannot take."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    nncf = pytest.importorskip("nncf")

    def fails(*args, **kwargs):
        raise RuntimeError("Unsupported operation in the graph\n  (more lines of detail)")

    monkeypatch.setattr(nncf, "quantize", fails)


def test_predict_int8_runs_onnxruntime_int8_when_nncf_fails_and_says_why(trained, monkeypatch,
                                                                         tmp_path):
    _nncf_fails(monkeypatch)
    root, weights = trained
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, ["predict", str(root / "test"), "--weights", str(weights),
                                 "--backend", "int8", "--json", "--top-k", "1"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert result.stderr.splitlines() == [
        "note: --backend int8 runs openvino-int8 (the fastest int8 backend installed)",
        "warning: openvino-int8 failed on resnet20 (NNCF cannot quantize the model: "
        "Unsupported operation in the graph); running onnxruntime-int8 instead"]
    rows = [json.loads(ln) for ln in result.stdout.splitlines()]
    assert len(rows) == 18 and {r["top"][0]["class"] for r in rows} <= {"a", "b", "c"}
    assert len(list((tmp_path / "cache" / "onnxruntime").glob("*-int8-*.onnx"))) == 1
    assert not list((tmp_path / "cache").rglob("*.xml"))  # no OpenVINO int8 model kept


def test_predict_openvino_int8_named_outright_fails_in_one_line(trained, monkeypatch,
                                                                tmp_path):
    from resnets.export.openvino import OpenVinoFailure

    _nncf_fails(monkeypatch)
    root, weights = trained
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    args = ["predict", str(root / "test"), "--weights", str(weights), "--backend",
            "openvino-int8", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: NNCF cannot quantize the model: Unsupported operation in the graph"]
    assert not (tmp_path / "cache" / "onnxruntime").exists()  # no fallback
    debug = runner.invoke(app, ["--debug", *args])
    assert debug.exit_code == 1 and isinstance(debug.exception, OpenVinoFailure)


def _eager_and_default_top1(paths):
    from resnets.tasks.classify import predict_with

    clf = load_classifier("resnet56")
    eager, errors = predict_with(clf, paths, top_k=1, batch_size=250, backend="torch")
    default, default_errors = predict_with(clf, paths, top_k=1, batch_size=250)
    assert not errors and not default_errors
    return [p.top[0][0] for p in eager], [p.top[0][0] for p in default]


def test_default_backend_gives_eager_top1_on_500_cifar10_test_images(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    from resnets.data.folder import scan_folder
    from tests.conftest import shared_path

    paths = scan_folder(shared_path("cifar10", "test")).paths[::20]  # 500, every class
    eager, default = _eager_and_default_top1(paths)
    assert len(eager) == 500 and default == eager


@pytest.mark.slow
def test_default_backend_gives_eager_top1_on_the_full_cifar10_test_split(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    from resnets.data.folder import scan_folder
    from tests.conftest import shared_path

    index = scan_folder(shared_path("cifar10", "test"))
    eager, default = _eager_and_default_top1(index.paths)
    assert default == eager
    top1 = sum(index.classes[y] == c for y, c in zip(index.labels, default, strict=True))
    assert top1 / len(default) == pytest.approx(0.9083, abs=5e-5)  # README: 90.83%


def test_predict_runs_an_exported_uint8_onnx_file_like_its_weights(tmp_path):
    pytest.importorskip("onnxruntime")
    from pathlib import Path

    from resnets.export import export_named

    examples = sorted((Path(__file__).resolve().parents[2] / "examples" / "images").glob("*"))
    onnx_file = tmp_path / "resnet20.onnx"
    export_named("resnet20", onnx_file, weights="resnet20", uint8_input=True)
    from_file, _ = predict(examples, str(onnx_file), top_k=1)
    from_weights, _ = predict(examples, "resnet20", top_k=1, backend="torch")
    assert len(from_file) == len(examples) == 10
    assert [p.top[0][0] for p in from_file] == [p.top[0][0] for p in from_weights]
    assert [p.top[0][1] for p in from_file] == pytest.approx(
        [p.top[0][1] for p in from_weights], abs=1e-5)
    cli = runner.invoke(app, ["predict", *map(str, examples), "--model", str(onnx_file),
                              "--json", "--top-k", "1"])
    assert cli.exit_code == 0, cli.output
    assert [json.loads(ln)["top"][0]["class"] for ln in cli.stdout.splitlines()] == \
        [p.top[0][0] for p in from_weights]


def test_predict_int8_calibrating_on_the_inputs_skips_the_unreadable_ones(tmp_path):
    """Without --calibration the int8 backends calibrate on the images being predicted; a
    damaged or missing one among them is reported like any other, not fatal to the rest."""
    pytest.importorskip("onnxruntime")
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.warns(UserWarning, match="calibration images could not be read"):
        preds, errors = predict([tmp_path, tmp_path / "missing.jpg"], "resnet20", top_k=1,
                                backend="onnxruntime-int8")
    assert len(preds) == 4 and len(errors) == 2
    assert "bad.png" in errors[0] and "missing.jpg" in errors[1]


def test_the_confusion_png_of_1000_classes_stays_a_few_thousand_pixels(tmp_path):
    """0.6 inch a class made a 54,000 px square (about 12 GB to draw) at 1,000 classes."""
    import torch
    from PIL import Image

    from resnets.tasks.classify import EvalReport, write_confusion

    classes = [f"c{i}" for i in range(1000)]
    report = EvalReport(50.0, 80.0, 1000, dict.fromkeys(classes, 50.0),
                        torch.eye(1000, dtype=torch.long), classes, [])
    _, png = write_confusion(report, tmp_path)
    assert max(Image.open(png).size) <= 2500


def test_a_class_with_no_readable_image_has_no_accuracy_not_zero(trained, tmp_path):
    import shutil

    root, weights = trained
    data = tmp_path / "only" / "test"  # a parent holding test/ alone is a test split
    shutil.copytree(root / "test", data)
    for f in (data / "a").iterdir():
        f.write_bytes(b"not an image")
    result = runner.invoke(app, ["eval", "--weights", str(weights), "--data",
                                 str(tmp_path / "only"), "--json", "--out", str(tmp_path / "ev")])
    assert result.exit_code == 1  # the unreadable files are reported
    report = json.loads(result.stdout)
    assert report["per_class"]["a"] is None and report["n"] == 12
    assert all(report["per_class"][c] is not None for c in ("b", "c"))
    table = runner.invoke(app, ["eval", "--weights", str(weights), "--data", str(data),
                                "--out", str(tmp_path / "ev2")], env={"COLUMNS": "120"})
    assert "n/a" in table.stdout
