import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import resnets
from resnets.cli import app
from tests.synthetic import BAD_INPUTS, GOOD_INPUTS, make_hostile_inputs, make_photo_folder

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"resnets {resnets.__version__}"


def test_info_table_lists_every_model_with_computed_numbers():
    result = runner.invoke(app, ["info"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for name in resnets.list_models():
        assert name in result.output
    assert "25,557,032" in result.output and "4.089" in result.output
    assert "269,722" in result.output and "3x3 (v1.5)" in result.output
    assert "22.85" in result.output  # ResNet-50, He et al. 2016 Table 3


def test_info_paper_stride_gives_table1_flops():
    result = runner.invoke(app, ["info", "--paper-stride"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    assert "3.858" in result.output and "1x1 (paper)" in result.output


def test_info_name_prints_stages_with_shapes():
    result = runner.invoke(app, ["info", "resnet50"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    assert "[1, 2048, 7, 7]" in result.output and "3 x Bottleneck" in result.output
    assert "stride on 3x3 (v1.5)" in result.output


def test_unknown_model_is_one_line_error_exit_1():
    result = runner.invoke(app, ["info", "resnet5"])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown model 'resnet5'")
    assert "Traceback" not in result.output


def test_debug_shows_the_exception():
    result = runner.invoke(app, ["--debug", "info", "resnet5"])
    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError)


def test_console_script_end_to_end():
    out = subprocess.run([sys.executable, "-m", "resnets", "info", "resnet20"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "269,722" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "resnets", "info", "nope"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1


# --- hostile inputs: every bad file is one line, every other file still gets its result ---


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    """The hostile inputs under a relative folder, with the test in its parent."""
    monkeypatch.chdir(tmp_path)
    files = make_hostile_inputs(tmp_path / "in")
    return {k: Path("in") / v.name for k, v in files.items()}


def _error_lines(result) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]


def test_predict_reports_each_bad_input_and_predicts_the_others(hostile):
    args = [str(hostile[k]) for k in (*BAD_INPUTS, *GOOD_INPUTS)]
    result = runner.invoke(app, ["predict", *args, "--json", "--top-k", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    predicted = [json.loads(ln)["path"] for ln in result.stdout.splitlines()]
    assert predicted == [str(hostile[k]) for k in GOOD_INPUTS]  # as given: relative
    errors = _error_lines(result)
    assert len(errors) == len(BAD_INPUTS)
    for case, line in zip(BAD_INPUTS, errors, strict=True):
        assert line.startswith(f"error: {hostile[case]}: "), line
    assert "is a folder" in errors[1] and "more than the limit" in errors[0]


def test_predict_walks_a_folder_and_reports_a_folder_named_like_a_photo(hostile):
    result = runner.invoke(app, ["predict", "in", "--csv", "p.csv", "--top-k", "1"])
    assert result.exit_code == 1
    errors = _error_lines(result)
    # the folder walk lists image files only; the bad files among them are reported
    assert {ln.split(": ")[1] for ln in errors} == {
        str(hostile[k]) for k in ("bomb", "truncated", "empty", "text")}
    rows = Path("p.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == sorted(str(hostile[k])
                                                           for k in GOOD_INPUTS)


@pytest.mark.parametrize("k", ["0", "-1"])
def test_predict_refuses_a_top_k_below_one_in_one_line(hostile, k):
    # --top-k 0 and -1 printed the top-1 class, as if 1 had been asked for
    result = runner.invoke(app, ["predict", str(hostile["rgba"]), "--json", "--top-k", k])
    assert result.exit_code == 1 and result.stdout == "", result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --top-k must be"), result.output
    assert k in lines[0]
    from resnets.tasks.classify import predict

    with pytest.raises(ValueError, match="top_k must be"):  # the library call too
        predict([hostile["rgba"]], top_k=int(k), backend="torch")


def test_upscale_writes_nothing_for_a_bad_input(hostile):
    args = [str(hostile[k]) for k in (*BAD_INPUTS, *GOOD_INPUTS)]
    result = runner.invoke(app, ["upscale", *args, "--model", "bicubic", "-o", "out",
                                 "--quiet"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(_error_lines(result)) == len(BAD_INPUTS)
    assert sorted(os.listdir("out")) == sorted(f"{hostile[k].stem}_x2.png"
                                               for k in GOOD_INPUTS)
    assert "in/rotated.jpg (64x48) -> out/rotated_x2.png (128x96)" in result.stdout


def test_eval_and_sr_eval_report_bad_files_and_score_the_rest(hostile, tmp_path):
    from resnets.tasks.classify import CIFAR10_CLASSES

    data = make_photo_folder(tmp_path / "photos", CIFAR10_CLASSES, per_class=(1, 1))
    for case in ("truncated", "text"):
        os.replace(hostile[case], data / "test" / "cat" / hostile[case].name)
    result = runner.invoke(app, ["eval", "--model", "resnet20", "--data", str(data / "test"),
                                 "--json", "--out", "ev"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["n"] == 10 and len(_error_lines(result)) == 2
    hr = tmp_path / "hr"
    hr.mkdir()
    for case in ("rgba", "gray16", "cmyk", "empty", "bomb"):
        os.replace(hostile[case], hr / hostile[case].name)
    result = runner.invoke(app, ["sr-eval", "--data", str(hr), "--model", "bicubic", "--json"])
    assert result.exit_code == 1, result.output
    assert len(json.loads(result.stdout)["images"]) == 3 and len(_error_lines(result)) == 2


def test_debug_shows_a_traceback_for_an_unreadable_folder(tmp_path):
    result = runner.invoke(app, ["--debug", "eval", "--model", "resnet20", "--data",
                                 str(tmp_path / "none")])
    assert result.exit_code == 1 and isinstance(result.exception, FileNotFoundError)


# --- output that survives pipes ------------------------------------------------------------

def test_info_in_a_pipe_prints_every_name_and_count_in_full():
    result = runner.invoke(app, ["info"], env={"COLUMNS": "40"})  # not a terminal
    assert result.exit_code == 0
    assert "…" not in result.output
    for name in ("resnext101_32x8d", "wide_resnet101_2", "126,886,696", "3x224x224"):
        assert name in result.output


def test_info_json_has_one_record_per_model():
    result = runner.invoke(app, ["info", "--json"])
    records = [json.loads(ln) for ln in result.stdout.splitlines()]
    assert [r["model"] for r in records] == resnets.list_models()
    assert records[0]["params"] == 11_689_512
    one = json.loads(runner.invoke(app, ["info", "resnet20", "--json"]).stdout)
    assert one["params"] == 269_722 and one["stages"][0]["stage"] == "conv1"


def test_train_on_a_mixed_photo_folder_then_predict_into_a_pipe(tmp_path, monkeypatch):
    """The issue's check: no loader override, image_size honoured; predictions in a pipe
    name every file in full."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    make_photo_folder(Path("photos"), per_class=(30, 4))
    long_name = Path("photos/test/dark") / ("a_very_long_photo_file_name_" * 3 + ".jpg")
    os.replace(next(Path("photos/test/dark").glob("*.jpg")), long_name)
    result = runner.invoke(app, ["train", "--model", "resnet18", "--data", "photos",
                                 "--epochs", "1", "--set", "image_size=64", "--out", "run"])
    assert result.exit_code == 0, result.output
    first = result.stderr.splitlines()[0]
    assert "in memory (68 images at 73x73" in first and "input 64 px" in first
    assert "smaller than one batch of 128" in result.stderr
    predicted = runner.invoke(app, ["predict", "photos/test", "--weights",
                                    "run/model.safetensors"], env={"COLUMNS": "60"})
    assert predicted.exit_code == 0, predicted.output
    assert "…" not in predicted.stdout
    for path in Path("photos/test").rglob("*.*"):
        assert str(path) in predicted.stdout


_COUNT_PREFETCHED = """
import atexit, sys
from resnets.data.prefetch import Prefetch
taken, take = [], Prefetch.take
def counted(self, *args):
    pixels = take(self, *args)
    taken.append(pixels is not None)
    return pixels
Prefetch.take = counted
atexit.register(lambda: print(f"taken {sum(taken)}", file=sys.stderr))
sys.argv = ["resnets", *sys.argv[1:]]
from resnets.cli import main
main()
"""


def _many_small_images(folder: Path, count: int = 300) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.{('jpg', 'png')[i % 2]}")


def test_predict_gives_the_same_lines_when_a_child_decodes_during_startup(hostile):
    """Enough files for `resnets predict` to fork a decoding child before importing torch:
    predictions, error lines and exit code as the library gives them without one."""
    from resnets.tasks.classify import predict

    _many_small_images(Path("in"))
    result = subprocess.run([sys.executable, "-c", _COUNT_PREFETCHED, "predict", "in",
                             "--json", "--top-k", "2", "--backend", "torch"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "taken 304\n" in result.stderr  # 300 + the 4 awkward good ones; the bad re-read
    preds, errors = predict(["in"], top_k=2, backend="torch")
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"path": p.path, "top": [{"class": c, "probability": v} for c, v in p.top]}
        for p in preds]
    assert _error_lines(result) == [f"error: {e}" for e in errors] and len(errors) == 4


def _session_members(session: int) -> list[str]:
    """``pid state`` of every process in a session."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) == session:
            members.append(f"{stat.parent.name} {fields[0]}")
    return members


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_predict_leaves_no_process_behind_when_it_fails_after_forking(hostile):
    _many_small_images(Path("in"))
    proc = subprocess.Popen([sys.executable, "-m", "resnets", "predict", "in", "--model",
                             "no_such_model"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and stderr.startswith("error: ") and "Traceback" not in stderr
    assert _session_members(proc.pid) == []  # its decoding child neither runs nor lingers


def test_sr_eval_json_is_strict_json_when_a_psnr_is_infinite(tmp_path):
    # a flat picture upscales exactly, so its PSNR is infinite: `Infinity` is not JSON
    from PIL import Image

    Image.new("RGB", (48, 48), (100, 150, 200)).save(tmp_path / "flat.png")
    result = runner.invoke(app, ["sr-eval", "--data", str(tmp_path), "--model", "bicubic",
                                 "--json"])
    assert result.exit_code == 0, result.output

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    record = json.loads(result.stdout, parse_constant=refuse)
    assert record["images"][0]["psnr"] is None and record["mean"]["psnr"] is None
    assert record["images"][0]["ssim"] > 0.99


@pytest.mark.parametrize("option", [["--batch-wait-ms", "inf"], ["--batch-wait-ms", "1e13"],
                                    ["--max-upload-mb", "inf"]])
def test_serve_refuses_endless_limits_in_one_line_before_loading(option, monkeypatch):
    # inf passed `>= 0`: the classify worker died on its first wait (every classify request
    # then hung, /healthz still ok), and int(inf) answered every upload 500
    import resnets.serve.server

    def started(config) -> None:
        raise AssertionError(f"served with {config}")

    monkeypatch.setattr(resnets.serve.server, "serve", started)
    result = runner.invoke(app, ["serve", *option])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert option[0][2:].replace("-", "_") in lines[0]


def test_sigterm_while_the_temporary_file_registry_is_locked_still_ends_the_process():
    # the signal handler that removes temporary files takes the registry's lock: a signal
    # arriving while the main thread held it (registering or dropping a temporary file)
    # deadlocked, and the process then ignored every SIGTERM and Ctrl-C (SIGKILL only)
    code = ("import os, signal\n"
            "from resnets import files\n"
            "files._install_signal_handlers()\n"
            "with files._LIVE_LOCK:\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    import time; time.sleep(30)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(resnets.__file__).parents[1])}
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=20)
    except subprocess.TimeoutExpired:  # killed with SIGKILL by subprocess.run
        pytest.fail("the process hung in its SIGTERM handler")
    assert proc.returncode == -15


def test_names_in_brackets_print_as_text_not_rich_markup(tmp_path, monkeypatch):
    """Rich read "[raw]" in a path as a style tag and dropped it from the table; a folder
    "x[" holding "]y.png" made "[/]" and a MarkupError traceback."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    for name in ("photos [raw]/cat.png", "x[/]y.png", "hr [b]/img [i].png"):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (200, 40, 40)).save(name)
    result = runner.invoke(app, ["predict", "photos [raw]/cat.png", "x[/]y.png", "--top-k", "1"])
    assert result.exit_code == 0, result.output
    assert "photos [raw]/cat.png" in result.stdout and "x[/]y.png" in result.stdout
    result = runner.invoke(app, ["sr-eval", "--data", "hr [b]", "--model", "bicubic",
                                 "--scale", "2"])
    assert result.exit_code == 0, result.output
    assert "hr [b]" in result.stdout and "img [i].png" in result.stdout


def test_eval_refuses_a_batch_size_below_one_before_loading(tmp_path):
    result = runner.invoke(app, ["eval", "--model", "resnet20", "--data", str(tmp_path),
                                 "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size" in result.output
    from resnets.tasks.classify import evaluate_folder

    with pytest.raises(ValueError, match="batch size must be at least 1, got -1"):
        evaluate_folder(None, tmp_path, batch_size=-1)  # the library call too


@pytest.mark.parametrize("args,message", [
    (["--calibration", "calib"], "--calibration is for the int8 backends"),
    (["--model", "m.onnx", "--device", "cuda"], "an exported --model runs as it is"),
    (["--model", "m.onnx", "--allow-nonfinite"], "an exported --model runs as it is"),
])
def test_predict_refuses_options_it_would_ignore(hostile, args, message):
    result = runner.invoke(app, ["predict", str(hostile["rgba"]), *args])
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.parametrize("command", ["train", "train-sr"])
def test_ctrl_c_in_training_says_how_to_resume(command, tmp_path, monkeypatch):
    import resnets.train as train_pkg
    import resnets.train.sr as train_sr_module

    run = tmp_path / "run"

    def interrupted(*args, **kwargs):
        run.mkdir()
        (run / "last.pt").write_bytes(b"")
        raise KeyboardInterrupt

    if command == "train":
        monkeypatch.setattr(train_pkg, "train", interrupted)
    else:
        monkeypatch.setattr(train_sr_module, "train_sr", interrupted)
    args = ["--model", "resnet20"] if command == "train" else []
    result = runner.invoke(app, [command, *args, "--data", str(tmp_path), "--out", str(run)])
    assert result.exit_code != 0
    assert f"interrupted: resume with `resnets {command} --resume {run}`" in result.stderr
