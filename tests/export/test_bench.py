import json

import pytest
from typer.testing import CliRunner

from resnets.cli import app
from resnets.export.bench import BenchConfig, parse_batches, run_bench
from tests.conftest import shared_path

runner = CliRunner()
RESULT_KEYS = {"backend", "batch", "images_per_s", "latency_ms_p50", "latency_ms_p90",
               "ratio_vs_torchvision"}
TINY = {"repeats": 2, "warmup": 1, "min_time_s": 0.0, "max_calls": 2, "threads": 1}


@pytest.fixture(scope="module")
def cifar_report():
    """Every resnets backend but compile and both onnxruntime peers, tiny settings."""
    calib = shared_path("cifar10", "train")
    cfg = BenchConfig(model="resnet20", batches=(1, 4), compare=("onnxruntime", "int8"),
                      backends=("eager", "optimized", "bf16", "onnxruntime",
                                "onnxruntime-int8"),
                      calib_dir=str(calib), calib_images=16, exporter="legacy", **TINY)
    return run_bench(cfg)


def test_report_has_one_result_per_backend_and_batch(cifar_report):
    labels = {"plain:eager", "resnets:optimized", "resnets:bf16", "resnets:onnxruntime",
              "resnets:onnxruntime-int8", "plain:onnxruntime", "plain:onnxruntime-int8"}
    found = {(r["backend"], r["batch"]) for r in cifar_report["results"]}
    assert found == {(label, b) for label in labels for b in (1, 4)}
    assert cifar_report["baseline"] == "plain:eager" and not cifar_report["skipped"]
    json.dumps(cifar_report)  # serializable as it is


def test_results_carry_the_issue_fields_with_consistent_values(cifar_report):
    for r in cifar_report["results"]:
        assert RESULT_KEYS <= set(r)
        assert r["latency_ms_p90"] >= r["latency_ms_p50"] > 0
        assert r["images_per_s"] == pytest.approx(r["batch"] * 1000 / r["latency_ms_p50"])
        assert len(r["images_per_s_per_repeat"]) == 2 and r["ratio_vs_torchvision"] > 0
        assert len(r["ratio_per_repeat"]) == 2 and min(r["ratio_per_repeat"]) > 0
        if r["backend"] == "plain:eager":
            assert r["ratio_vs_torchvision"] == 1.0 and r["ratio_per_repeat"] == [1.0, 1.0]
        if r["backend"] in ("resnets:optimized", "resnets:onnxruntime", "plain:onnxruntime"):
            assert r["max_abs_diff_vs_baseline"] <= 1e-4


def test_machine_description_pins_threads(cifar_report):
    machine = cifar_report["machine"]
    assert machine["threads"] == 1 and machine["cores"] >= 1
    assert machine["cpu"] and machine["torch"] and machine["onnxruntime"]


def test_torchvision_twin_is_the_baseline_with_equal_outputs():
    report = run_bench(BenchConfig(model="resnet18", batches=(1,), backends=("optimized",),
                                   compare=("torchvision",), image_size=64, **TINY))
    labels = {r["backend"]: r for r in report["results"]}
    assert set(labels) == {"torchvision:eager", "resnets:optimized"}
    assert labels["resnets:optimized"]["max_abs_diff_vs_baseline"] <= 1e-4
    assert report["input_size"] == [3, 64, 64]


def test_cli_bench_json_prints_one_object_on_stdout():
    result = runner.invoke(app, ["bench", "--model", "resnet20", "--batch", "2", "--backend",
                                 "eager,optimized", "--compare", "", "--repeats", "1",
                                 "--min-time", "0", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {r["backend"] for r in report["results"]} == {"plain:eager", "resnets:optimized"}


@pytest.mark.parametrize("args, message", [
    (["--batch", "1,x"], "expected batch sizes like 1,16, got '1,x'"),
    (["--batch", "0"], "batch sizes must be >= 1"),
    (["--backend", "eager,tensorrt"], "unknown backend 'tensorrt'"),
    (["--compare", "timm"], "unknown peer 'timm': expected some of"),
])
def test_cli_bench_bad_flags_are_one_line_errors(args, message):
    result = runner.invoke(app, ["bench", "--model", "resnet20", *args])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert message in lines[0]


@pytest.mark.parametrize(("present", "expected"), [
    ({"openvino", "nncf", "onnxruntime", "onnx"}, ("eager", "openvino-int8", "onnxruntime-int8")),
    ({"onnxruntime", "onnx"}, ("eager", "onnxruntime-int8", "openvino-int8")),
])
def test_int8_backend_is_named_by_the_runtime_it_resolves_to(monkeypatch, present, expected):
    from resnets.export import backends

    monkeypatch.setattr(backends, "installed", lambda module: module in present)
    cfg = BenchConfig(backends=("eager", "int8", "openvino-int8", "onnxruntime-int8"),
                      compare=("int8",))
    assert cfg.backends == expected  # each timed once, under its own name
    assert cfg.compare == ("onnxruntime-int8",)  # a peer's int8 is onnxruntime's quantizer


def test_parse_batches_keeps_order():
    assert parse_batches("16, 1") == (16, 1)
