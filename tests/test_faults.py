"""Issue #20, "Faults and hostile artefacts", through the command line: a failed run never
looks like a success, and nothing is lost or silently wrong.

Each test drives ``resnets`` as a user would (tiny data, seconds each) and checks the
contract: a non-zero exit where something failed, one line of error and no traceback, no
partial or hidden temporary file left behind, and the other inputs' results intact. Tests
are grouped by the numbered items of the issue.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from resnets.cli import app
from resnets.models.registry import build_model
from resnets.train.run_folder import load_training_state
from resnets.weights.preprocessing import CIFAR_MEAN, CIFAR_STD
from resnets.weights.state_dict_io import save_safetensors
from tests.synthetic import make_folder, read_weights

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


# -- helpers ----------------------------------------------------------------------------------

def cli(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> str:
    """Exit 1, no traceback, exactly one ``error:`` line holding every fragment."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if p.is_file())


def train_args(data: Path, out: Path, *extra: str | Path) -> list[str | Path]:
    return ["train", "--data", data, "--out", out, "--epochs", "1", "--batch-size", "8",
            "--lr", "0.05", "--amp", "none", "--val-fraction", "0.25", "--quiet",
            "--set", "channels_last=false", *extra]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("tiny"), per_class=(24, 6))


@pytest.fixture
def own_data(tmp_path) -> Path:
    """A dataset this test may rename, extend or delete."""
    return make_folder(tmp_path / "own", per_class=(24, 6))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data) -> Path:
    """A finished one-epoch run (read-only for the tests: copy it to change it)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    result = runner.invoke(app, [str(a) for a in train_args(data, run)])
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(path)
    return path


def weights_file(path: Path, *, nan: bool = False, metadata: dict | None = None,
                 state: dict | None = None) -> Path:
    """A resnet20 classifier of 3 classes as ``resnets train`` writes it, optionally spoiled."""
    torch.manual_seed(0)
    state = state if state is not None else build_model("resnet20", num_classes=3).state_dict()
    if nan:
        state = dict(state)
        state["layer1.0.conv1.weight"] = torch.full_like(state["layer1.0.conv1.weight"],
                                                         float("nan"))
    meta = {"model": "resnet20", "classes": ["a", "b", "c"],
            "preprocess": {"size": 16, "resize": 16, "mean": list(CIFAR_MEAN),
                           "std": list(CIFAR_STD)}}
    meta.update(metadata or {})
    return save_safetensors(state, path, meta)


def run_copy(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


# -- 1. non-finite is failure -------------------------------------------------------------------

def test_1_a_diverging_run_fails_with_the_step_and_cause_and_writes_no_model(data, tmp_path):
    run = tmp_path / "run"
    result = cli(*train_args(data, run, "--lr", "1e30", "--epochs", "2"))
    line = assert_one_line_error(result, "training diverged", "step", "learning rate 1e+30")
    assert "no checkpoint was written" in line
    assert not (run / "model.safetensors").exists() and not (run / "result.json").exists()
    assert not (run / "last.pt").exists() and not (run / "run.lock").exists()
    assert hidden_files(run) == []


@pytest.mark.parametrize("flags", [("--lr", "inf"), ("--weight-decay", "nan"),
                                   ("--lr", "-1")])
def test_1_non_finite_or_negative_hyperparameters_are_refused_before_any_file(
        data, tmp_path, flags):
    run = tmp_path / "run"
    assert_one_line_error(cli(*train_args(data, run, *flags)))
    assert not run.exists()


def test_1_divergence_in_a_later_epoch_keeps_the_last_good_checkpoint(
        data, tmp_path, monkeypatch):
    from resnets.train import loop

    real = loop.F.cross_entropy
    calls = {"train": 0}

    def poisoned(logits, *args, **kwargs):  # finite for epoch 1 (6 steps), then NaN
        loss = real(logits, *args, **kwargs)
        if logits.requires_grad:
            calls["train"] += 1
            if calls["train"] > 6:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(loop.F, "cross_entropy", poisoned)
    run = tmp_path / "run"
    result = cli(*train_args(data, run, "--epochs", "2", "--set", "max_nonfinite_losses=2"))
    line = assert_one_line_error(result, "2 steps in a row (epoch 2, step 2 of 6)")
    assert f"the last good checkpoint {run / 'last.pt'} is kept" in line
    state = load_training_state(run / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values()
               if v.is_floating_point())
    assert not (run / "model.safetensors").exists() and not (run / "run.lock").exists()



def test_1_a_skipped_step_leaves_batchnorm_statistics_as_they_were():
    """The forward pass folds a batch into BatchNorm's running statistics before its loss is
    known: skipping an overflowing batch must undo that, or the run's eval model is NaN."""
    from resnets.train.divergence import NonFiniteGuard

    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=3).train()
    guard = NonFiniteGuard(3, Path("."), "test", model)
    x = torch.randn(4, 3, 16, 16)
    guard.keep()
    assert guard.finite(torch.nn.functional.cross_entropy(model(x), torch.zeros(4).long()),
                        0, 0, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    guard.keep()
    loss = torch.nn.functional.cross_entropy(model(x * float("inf")), torch.zeros(4).long())
    assert not torch.isfinite(loss)
    assert not torch.isfinite(model.bn1.running_var).all()  # what the skip has to undo
    assert not guard.finite(loss, 0, 1, 2)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_1_a_run_survives_one_overflowing_batch(data, tmp_path, monkeypatch):
    from resnets.train import loop

    real = loop.Trainer._train_epoch
    seen = {"steps": 0}

    def poisoned_forward(module, args):  # the third training batch overflows
        if module.training:
            seen["steps"] += 1
            if seen["steps"] == 3:
                return (args[0] * float("inf"),)
        return None

    def train_epoch(self, *args, **kwargs):
        handle = self.model.register_forward_pre_hook(poisoned_forward)
        try:
            return real(self, *args, **kwargs)
        finally:
            handle.remove()

    monkeypatch.setattr(loop.Trainer, "_train_epoch", train_epoch)
    run = tmp_path / "run"
    result = cli(*train_args(data, run, "--epochs", "2"))
    assert result.exit_code == 0, result.output
    state, _ = read_weights(run / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def sr_data(root: Path) -> Path:
    """Six random images in T91/ and BSD200/, the layout train-sr reads."""
    for i in range(6):
        folder = root / ("T91" if i < 3 else "BSD200")
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
    return root


def train_sr_args(root: Path, run: Path, *extra: str) -> list[str | Path]:
    return ["train-sr", "--model", "edsr_tiny", "--data", root, "--out", run, "--scales", "2",
            "--patch-size", "16", "--batch-size", "2", "--epochs", "1", "--steps-per-epoch",
            "6", "--val-count", "1", "--report", "", "--device", "cpu", "--quiet", *extra]


def test_1_train_sr_stops_on_a_diverging_loss(tmp_path):
    root = sr_data(tmp_path / "sr")
    run = tmp_path / "run"
    result = cli(*train_sr_args(root, run, "--epochs", "2", "--lr", "1e30"))
    assert_one_line_error(result, "training diverged", "learning rate 1e+30 is far too high")
    assert not (run / "model.safetensors").exists()
    assert_one_line_error(cli("train-sr", "--data", root, "--out", tmp_path / "r2",
                              "--lr", "inf"), "lr must be a finite number")


def test_1_nan_weights_are_refused_by_predict_eval_export_and_convert(data, image, tmp_path):
    bad = weights_file(tmp_path / "nan.safetensors", nan=True)
    assert_one_line_error(cli("predict", image, "--weights", bad), "NaN or infinite")
    assert_one_line_error(cli("eval", "--weights", bad, "--data", data / "test",
                              "--out", tmp_path / "ev"), "NaN or infinite")
    assert not (tmp_path / "ev").exists()
    onnx = tmp_path / "m.onnx"
    assert_one_line_error(cli("export", "--model", "resnet20", "--weights", bad, "-o", onnx),
                          "NaN or infinite")
    converted = tmp_path / "c.safetensors"
    assert_one_line_error(cli("weights", "convert", bad, converted), "NaN or infinite")
    assert not onnx.exists() and not converted.exists() and hidden_files(tmp_path) == []
    # --allow-nonfinite is there to inspect such a file; its NaN probabilities are JSON null
    assert cli("predict", image, "--weights", bad, "--allow-nonfinite").exit_code == 0
    shown = cli("predict", image, "--weights", bad, "--allow-nonfinite", "--json",
                "--backend", "torch")  # PyTorch keeps the NaN (OpenVINO's ReLU drops it)
    assert shown.exit_code == 0
    record = json.loads(shown.stdout.splitlines()[-1],
                        parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert record["top"][0]["probability"] is None
    assert cli("weights", "convert", bad, converted, "--allow-nonfinite").exit_code == 0


# -- 2. one run, one folder -------------------------------------------------------------------

def test_2_two_trainings_into_one_folder_one_fails_naming_the_holder(data, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "resnets", *map(str, train_args(
        data, run, "--seed", str(seed), "--epochs", "2"))], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, cwd=REPO) for seed in (1, 2)]
    outs = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in outs)
    assert codes == [0, 1], outs
    (_, _, lost_err), = [o for o in outs if o[0] == 1]
    (_, won_out, _), = [o for o in outs if o[0] == 0]
    assert lost_err.count("\n") == 1 and "Traceback" not in lost_err
    assert "is in use by process" in lost_err or "already holds a run" in lost_err
    winner_seed = 1 if procs[0].returncode == 0 else 2
    assert json.loads((run / "config.json").read_text())["seed"] == winner_seed
    assert json.loads(won_out)["run"] == str(run)
    assert load_training_state(run / "last.pt")["config"]["seed"] == winner_seed
    assert not (run / "run.lock").exists() and hidden_files(run) == []


# -- 3. resume is explicit ----------------------------------------------------------------------

def test_3_resume_refuses_changes_it_cannot_make_listing_them(trained, tmp_path):
    run = run_copy(trained, tmp_path)
    before = (run / "last.pt").read_bytes()
    result = cli("train", "--resume", run, "--model", "resnet56", "--lr", "5", "--epochs", "2")
    line = assert_one_line_error(result, "cannot change", "model ('resnet20' -> 'resnet56')",
                                 "lr (0.05 -> 5.0)")
    assert "epochs" not in line.split("cannot change:")[1].split(".")[0]
    assert (run / "last.pt").read_bytes() == before and not (run / "run.lock").exists()
    assert_one_line_error(cli("train", "--resume", run, "--recipe", "fast"), "--recipe")


def test_3_data_is_stored_absolute_and_resume_takes_more_epochs_from_elsewhere(
        own_data, tmp_path, monkeypatch):
    monkeypatch.chdir(own_data.parent)
    run = tmp_path / "run"
    assert cli(*train_args(Path(own_data.name), run)).exit_code == 0
    stored = json.loads((run / "config.json").read_text())["data"]
    assert Path(stored).is_absolute() and Path(stored) == own_data
    monkeypatch.chdir(tmp_path.parent)
    result = cli("train", "--resume", run, "--epochs", "2", "--quiet")
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_3_a_moved_dataset_is_given_on_resume_and_a_missing_one_named(own_data, tmp_path):
    run = tmp_path / "run"
    assert cli(*train_args(own_data, run)).exit_code == 0
    moved = own_data.parent / "moved"
    own_data.rename(moved)
    assert_one_line_error(cli("train", "--resume", run, "--epochs", "2"),
                          str(own_data), "not there")
    assert_one_line_error(cli("train", "--resume", run, "--data", "/nonexistent"),
                          "/nonexistent")
    result = cli("train", "--resume", run, "--data", moved, "--epochs", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "result.json").read_text())["best_epoch"] >= 1


def test_3_train_sr_resume_is_explicit_too(tmp_path):
    root = sr_data(tmp_path / "sr")
    run = tmp_path / "run"
    assert cli(*train_sr_args(root, run)).exit_code == 0
    assert_one_line_error(cli("train-sr", "--resume", run, "--lr", "1", "--set", "loss=l2"),
                          "cannot change", "lr (0.0005 -> 1.0)", "loss ('l1' -> 'l2')")
    result = cli("train-sr", "--resume", run, "--epochs", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert_one_line_error(cli("train-sr", "--resume", run, "--epochs", "1"),
                          "the run has done 2 epochs: epochs must be at least 2, got 1")
    result = cli("train-sr", "--resume", run, "--epochs", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert load_training_state(run / "last.pt")["epoch"] == 2


# -- 4. resume checks the dataset -----------------------------------------------------------

@pytest.mark.parametrize("change", ["rename", "add", "remove"])
def test_4_resume_on_a_changed_dataset_is_refused(own_data, tmp_path, change):
    run = tmp_path / "run"
    assert cli(*train_args(own_data, run)).exit_code == 0
    before = (run / "last.pt").read_bytes()
    train = own_data / "train"
    if change == "rename":
        (train / "c").rename(train / "z")
        (own_data / "test" / "c").rename(own_data / "test" / "z")
        fragments = ("classes", "missing c", "new z")
    elif change == "add":
        shutil.copy(train / "a" / "000.png", train / "a" / "extra.png")
        fragments = ("a 24 -> 25", "validation split would change")
    else:
        shutil.rmtree(train / "c")
        shutil.rmtree(own_data / "test" / "c")
        fragments = ("missing c",)
    result = cli("train", "--resume", run, "--epochs", "2")
    assert_one_line_error(result, "cannot resume", *fragments)
    assert (run / "last.pt").read_bytes() == before and not (run / "run.lock").exists()


# -- 5. downloads are bounded --------------------------------------------------------------------

@pytest.fixture
def web():
    """A server on 127.0.0.1: ``/endless.pth`` streams zeros with no length given (up to
    256 MB, so that a broken size limit fails the test instead of filling the disk: the
    code before the limit wrote 38 GB here), ``/slow.pth`` the same at ~6 MB/s,
    ``/page.safetensors`` is an HTML page served with status 200."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Event, Thread

    stop = Event()
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            requests.append(self.path)
            self.send_response(200)
            if self.path.startswith("/page"):
                body = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.end_headers()
            chunk = b"\0" * 65536
            try:
                for _ in range(4096):  # 256 MB at most
                    if stop.is_set():
                        break
                    self.wfile.write(chunk)
                    if self.path.startswith("/slow"):
                        time.sleep(0.01)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.requests = requests
    yield httpd
    stop.set()
    httpd.shutdown()
    httpd.server_close()


def cache_files(tmp_path: Path) -> list[str]:
    cache = tmp_path / "torch_home"
    return sorted(p.name for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_5_an_endless_download_stops_at_the_cap_and_leaves_nothing(web, image, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("RESNETS_MAX_DOWNLOAD_MB", "2")
    result = cli("predict", image, "--model", "resnet20", "--weights",
                 f"{web.base}/endless.pth")
    assert_one_line_error(result, "larger than 2 MB", "RESNETS_MAX_DOWNLOAD_MB")
    assert cache_files(tmp_path) == []


def test_5_an_html_page_is_refused_and_not_cached(web, image, tmp_path):
    url = f"{web.base}/page.safetensors"
    for _ in range(2):  # the second call downloads again: nothing bad was cached
        assert_one_line_error(cli("predict", image, "--model", "resnet20", "--weights", url),
                              "a web page, not a checkpoint")
        assert cache_files(tmp_path) == []
    assert web.requests.count("/page.safetensors") == 2


def test_5_sigterm_during_a_download_removes_the_partial_file(web, tmp_path):
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch_home"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "resnets", "weights", "convert",
                             f"{web.base}/slow.pth", str(tmp_path / "out.safetensors")],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if cache.exists() and any(p.stat().st_size > 0 for p in cache.iterdir()):
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the download never started")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    assert list(cache.iterdir()) == []


# -- 6. hostile metadata -------------------------------------------------------------------------

def _wrong_shape_state() -> dict:
    state = build_model("resnet20", num_classes=3).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(16, 16, 5, 5)
    return state


HOSTILE = {
    "size 100000": ({"preprocess": {"size": 100000, "resize": 100000,
                                    "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)}}, None,
                    "4096"),
    "preprocess not JSON": ({"preprocess": "not json {"}, None, "preprocess"),
    "classes not JSON": ({"classes": "not a list"}, None, "classes"),
    "class count != head": ({"classes": ["a", "b"]}, None, "2 class names"),
    "std 0": ({"preprocess": {"size": 16, "resize": 16, "mean": [0.5, 0.5, 0.5],
                              "std": [0.0, 0.2, 0.2]}}, None, "std must be positive"),
    "wrong-shape tensor": ({}, "wrong", "differ in shape"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("command", ["predict", "eval"])
def test_6_hostile_metadata_is_one_line(case, command, data, image, tmp_path):
    metadata, state, fragment = HOSTILE[case]
    path = weights_file(tmp_path / "w.safetensors", metadata=metadata,
                        state=_wrong_shape_state() if state else None)
    args = (["predict", image] if command == "predict"
            else ["eval", "--data", data / "test", "--out", tmp_path / "ev"])
    assert_one_line_error(cli(*args, "--weights", path), fragment)


# -- 7. system errors --------------------------------------------------------------------------

@pytest.fixture
def read_only(monkeypatch):
    """Every temporary file fails as on a read-only file system."""
    import resnets.files as files

    def refuse(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(dir))

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)


def test_7_read_only_outputs_are_one_line_naming_the_path(data, trained, tmp_path, read_only):
    onnx = tmp_path / "m.onnx"
    assert_one_line_error(cli("export", "--model", "resnet20", "-o", onnx),
                          str(onnx), "Read-only file system")
    assert_one_line_error(cli(*train_args(data, tmp_path / "run")), "Read-only file system")
    assert not (tmp_path / "run" / "run.lock").exists()
    assert_one_line_error(cli("eval", "--weights", trained / "model.safetensors", "--data",
                              data / "test", "--out", tmp_path / "ev"), "Read-only file system")


def test_7_a_full_disk_during_a_checkpoint_keeps_the_previous_one(data, tmp_path, monkeypatch):
    from resnets.train import run_folder

    real_save = run_folder.torch.save
    calls = []

    def save(state, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # epoch 2's first checkpoint write
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(state, path, *args, **kwargs)

    monkeypatch.setattr(run_folder.torch, "save", save)
    run = tmp_path / "run"
    result = cli(*train_args(data, run, "--epochs", "2"))
    assert_one_line_error(result, str(run), "No space left on device",
                          "previous file, if any, is unchanged")
    assert load_training_state(run / "last.pt")["epoch"] == 1
    assert load_training_state(run / "best.pt")["epoch"] == 1
    assert hidden_files(run) == [] and not (run / "model.safetensors").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("device", ["cuda", "tpu"])
def test_7_a_missing_device_is_one_line_in_eval_and_predict(data, image, trained, device):
    weights = trained / "model.safetensors"
    assert_one_line_error(cli("predict", image, "--weights", weights, "--device", device))
    assert_one_line_error(cli("eval", "--weights", weights, "--data", data / "test",
                              "--device", device))


# -- 8. --set is parsed by the config's types ------------------------------------------------

@pytest.mark.parametrize(("setting", "fragment"), [
    ("lr=abc", "lr must be a number"),
    ("epochs=1.5", "epochs must be a whole number"),
    ('epochs="2"', "epochs must be a whole number"),
    ("milestones=5", "milestones must be a list"),
    ("channels_last=maybe", "channels_last must be true or false"),
    ("checkpoint_every=-3", "checkpoint_every must be >= 0"),
    ("workers=-1", "workers must be >= 0"),
    ("subset_per_class=-5", "subset_per_class must be >= 0"),
    ('model_kwargs={"bogus":1}', "unknown model option(s) for resnet20: bogus; resnet20 takes"),
    ("learning_rate=0.1", "unknown training option(s): learning_rate"),
])
def test_8_bad_set_values_are_refused_before_any_file(data, tmp_path, setting, fragment):
    run = tmp_path / "run"
    assert_one_line_error(cli(*train_args(data, run, "--set", setting)), fragment)
    assert not run.exists()


def test_8_good_set_values_are_typed(data, tmp_path):
    run = tmp_path / "run"
    result = cli(*train_args(data, run, "--set", "milestones=[0.3,0.6]", "--set",
                             "label_smoothing=0.1", "--set",
                             'model_kwargs={"zero_init_residual": true}'))
    assert result.exit_code == 0, result.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["milestones"] == [0.3, 0.6] and cfg["label_smoothing"] == 0.1
    assert cfg["channels_last"] is False and cfg["model_kwargs"] == {"zero_init_residual": True}


# -- 9. temporary files -----------------------------------------------------------------------

def test_9_sigterm_during_export_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "r50.onnx"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "resnets", "export", "--model", "resnet50",
                             "-o", str(out)], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.stat().st_size > 0 for p in tmp_path.glob(".r50.onnx.*.tmp*")):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"no temporary file appeared: {proc.communicate()[1][-500:]}")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_9_stale_temporary_files_of_dead_processes_are_swept(tmp_path):
    """Swept: a dead pid's file unwritten for over an hour. Kept: a live pid's, and a dead
    pid's written recently (another container sharing the cache sees our pids as dead: its
    download in progress was deleted)."""
    from resnets.files import STALE_AFTER_S

    stale = tmp_path / f".m.safetensors.{dead_pid()}.k2j3h4.tmp.safetensors"
    recent = tmp_path / f".n.safetensors.{dead_pid()}.q9w8e7.tmp.safetensors"
    live = tmp_path / ".m.safetensors.1.a1b2c3.tmp.safetensors"  # pid 1 is alive
    other = tmp_path / ".keep.me"
    for path in (stale, recent, live, other):
        path.write_bytes(b"x" * 100)
    old = time.time() - STALE_AFTER_S - 60
    os.utime(stale, (old, old))
    result = cli("export", "--model", "resnet20", "-o", tmp_path / "m.safetensors")
    assert result.exit_code == 0, result.output
    assert not stale.exists() and recent.exists() and live.exists() and other.exists()


# -- 10. messages that name the file and the reason --------------------------------------------

@pytest.mark.parametrize(("content", "fragment"), [
    (b"", "the file is empty"),
    (os.urandom(4096), "damaged or not a resnets training checkpoint"),
])
def test_10_a_damaged_last_checkpoint_is_named_with_the_reason(trained, tmp_path, content,
                                                              fragment):
    run = run_copy(trained, tmp_path)
    (run / "last.pt").write_bytes(content)
    assert_one_line_error(cli("train", "--resume", run, "--epochs", "2"),
                          str(run / "last.pt"), fragment)


def test_10_a_damaged_last_metrics_line_is_dropped_and_resume_goes_on(trained, tmp_path,
                                                                     caplog):
    run = run_copy(trained, tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # a write cut off by a crash
    result = cli("train", "--resume", run, "--epochs", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert "metrics.jsonl: line 2 is damaged" in caplog.text
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_10_a_damaged_metrics_line_elsewhere_names_the_file_and_line(trained, tmp_path):
    run = run_copy(trained, tmp_path)
    good = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text("garbage\n" + good)
    assert_one_line_error(cli("train", "--resume", run, "--epochs", "2"),
                          f"{run / 'metrics.jsonl'} line 1 is damaged (Expecting value)")


def test_10_sr_eval_reports_and_skips_one_bad_image(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / "good.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "tiny.png")
    (folder / "broken.png").write_bytes(b"not an image")
    result = cli("sr-eval", "--data", folder, "--model", "bicubic", "--scale", "2", "--json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"error: {folder / 'tiny.png'}: image of 1x1 pixels" in result.stderr
    assert "broken.png" in result.stderr
    record = json.loads(result.stdout)
    assert [i["name"] for i in record["images"]] == ["good.png"] and len(record["errors"]) == 2


def test_10_export_refuses_a_suffix_of_another_format(tmp_path):
    out = tmp_path / "m.onnx"
    assert_one_line_error(cli("export", "--model", "resnet20", "--format", "torchscript",
                              "-o", out), "m.onnx", ".pt", "--force-extension")
    assert list(tmp_path.iterdir()) == []
    result = cli("export", "--model", "resnet20", "--format", "torchscript", "-o", out,
                 "--force-extension")
    assert result.exit_code == 0, result.output
    assert torch.jit.load(str(out)) is not None


def test_10_convert_with_a_model_refuses_wrong_shapes(tmp_path):
    bad = weights_file(tmp_path / "w.safetensors", state=_wrong_shape_state())
    out = tmp_path / "c.safetensors"
    assert_one_line_error(cli("weights", "convert", bad, out, "--model", "resnet20"),
                          "layer1.0.conv1.weight [16, 16, 5, 5] vs [16, 16, 3, 3]")
    assert not out.exists()
    good = weights_file(tmp_path / "g.safetensors")  # another class count is fine
    assert cli("weights", "convert", good, out, "--model", "resnet20").exit_code == 0
