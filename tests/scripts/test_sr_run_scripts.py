"""The scripts that follow a long train-sr run before it is bundled: its curve on the report
sets (scripts/sr_checkpoint_curve.py) and its PSNR through every SR backend
(scripts/sr_backend_parity.py), on a run of seconds."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from resnets.train.sr import SRTrainConfig, SRTrainer
from tests.conftest import one_image_sr_ref, shared_path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    src = shared_path("sr")
    root = tmp_path_factory.mktemp("sr")
    for name in ("T91", "BSD200"):
        (root / name).mkdir()
        for f in sorted((src / name).iterdir())[:4]:
            Image.open(f).convert("RGB").crop((0, 0, 48, 48)).save(root / name / f"{f.stem}.png")
    run = root / "run"
    SRTrainer(SRTrainConfig(model="edsr_tiny", data=str(root), out=str(run), scales=(2, 3, 4),
                            patch_size=24, batch_size=4, epochs=1, steps_per_epoch=6, lr=1e-3,
                            val_count=2, report_sets=(), seed=0), quiet=True).fit()
    return run


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_parity_scores_best_pt_through_each_backend_beside_eager(tiny_run, tmp_path):
    ref = one_image_sr_ref(tmp_path / "ref")  # bf16 is emulated on AVX2 CPUs: slow
    done = _script("sr_backend_parity.py", str(tiny_run), "--backends", "torch,bf16",
                   "--ref", str(ref))
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["step"] == 6 and record["bench"] == "Set5"
    assert set(record["psnr"]) == {f"x{s}_{b}" for s in (2, 3, 4) for b in ("torch", "bf16")}
    assert all(record["vs_eager_db"][f"x{s}_torch"] == 0 for s in (2, 3, 4))
    assert all(0 < abs(record["vs_eager_db"][f"x{s}_bf16"]) < 0.05 for s in (2, 3, 4))
    assert all(20 < v < 45 for v in record["psnr"].values())


def test_curve_appends_one_record_per_call(tiny_run, tmp_path):
    ref = shared_path("sr", "matlab_ref")
    log = tmp_path / "curve.jsonl"
    for _ in range(2):
        done = _script("sr_checkpoint_curve.py", str(tiny_run), "--sets", "Set5",
                       "--report-data", str(ref), "--log", str(log))
        assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["step"] == 6 and rows[0]["model"] == "edsr_tiny"
    assert rows[0]["Set5_x2"] == rows[1]["Set5_x2"] and 20 < rows[0]["Set5_x4"] < 45


def _finish(tmp_path: Path, run: Path, **env: str) -> tuple[subprocess.CompletedProcess, list]:
    """scripts/finish_sr_run.sh with python, make and the trainer pause replaced by a
    recorder: which commands it runs, in which order, with which arguments."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "fake"
    fake.write_text(f'#!/bin/bash\necho "$(basename "$0") $*" >> {calls}\n')
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(SCRIPTS / "finish_sr_run.sh"), str(run),
                           "resnets train-sr x", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PY": str(fake), "MAKE": str(fake), "QUIET": "env",
                               **env})
    lines = calls.read_text().splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return done, lines


def test_finish_runs_each_step_once_in_order_and_resumes_where_it_stopped(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "edsr_baseline"}))
    done, calls = _finish(tmp_path, run, BF16="0")
    assert done.returncode == 2 and "no result.json" in done.stderr and calls == []
    (run / "result.json").write_text("{}")
    done, calls = _finish(tmp_path, run, BF16="0")
    assert done.returncode == 0, done.stderr
    steps = [c.split()[1] for c in calls]
    assert steps == ["scripts/sr_checkpoint_curve.py", "scripts/bundle_sr_weights.py",
                     "scripts/sr_backend_parity.py", "benchmarks/bench_sr.py", "demo",
                     "benchmarks/bench_serve_upscaler.py", "benchmarks/bench_sr.py"]
    assert "docs/sr/edsr_baseline_x234-16k-curve.jsonl" in calls[0]
    assert "--store-dtype float16 --command resnets train-sr x" in calls[1]
    assert "--backends torch,onnxruntime,openvino" in calls[2]  # no emulated bf16
    assert calls[5].endswith(f"--json {tmp_path}/out/serve-upscaler.json")
    assert calls[6].endswith("--backends torch onnxruntime openvino --json "
                             f"{tmp_path}/out/speed.json")
    assert "no native bf16" in done.stderr
    (tmp_path / "out" / "4-quality.ok").unlink()  # as if cut off during step 4
    (tmp_path / "out" / "5-demo.ok").unlink()
    (tmp_path / "out" / "7-speed.ok").unlink()
    done, calls = _finish(tmp_path, run, BF16="1")
    assert done.returncode == 0, done.stderr
    assert [c.split()[1] for c in calls] == ["benchmarks/bench_sr.py", "demo",
                                             "benchmarks/bench_sr.py"]
    assert "--backends torch bf16 onnxruntime openvino" in calls[2]
    assert done.stderr.count("skipped") == 4


def test_a_failed_finish_step_stops_the_script_and_is_not_marked_done(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "edsr_baseline"}))
    (run / "result.json").write_text("{}")
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/bash\n[[ $1 == *bundle* ]] && exit 3\nexit 0\n")
    failing.chmod(0o755)
    done = subprocess.run(["bash", str(SCRIPTS / "finish_sr_run.sh"), str(run), "cmd",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PY": str(failing), "QUIET": "env", "BF16": "0"})
    assert done.returncode != 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.ok")) == ["1-curve.ok"]


def _state(pid: int) -> str:
    """The process state letter from /proc (T: stopped)."""
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]


def test_quiet_pauses_trainers_only_and_resumes_them(tmp_path):
    """scripts/quiet stops `python -m resnets train-sr` processes while its command runs and
    continues them after; a process that only names such a command in its arguments (the
    finishing script, whose record quotes the training command) is left running."""
    fake = tmp_path / "fake" / "resnets"
    fake.mkdir(parents=True)
    (fake / "__main__.py").write_text("import time\ntime.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "fake")}
    trainer = subprocess.Popen([sys.executable, "-m", "resnets", "train-sr", "--resume", "x"],
                               env=env)
    paused = subprocess.Popen([sys.executable, "-m", "resnets", "experiment", "degradation"],
                              env=env)  # stopped before quiet runs: an outer quiet's
    decoy = subprocess.Popen(["bash", "-c", "sleep 60", "bash",
                              f"{sys.executable} -m resnets train-sr --resume x"])
    try:
        time.sleep(0.5)
        os.kill(paused.pid, signal.SIGSTOP)
        probe = ("import sys\nfor pid in sys.argv[1:]:\n"
                 "    print(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0])")
        during = subprocess.run([str(SCRIPTS / "quiet"), sys.executable, "-c", probe,
                                 str(trainer.pid), str(decoy.pid)], capture_output=True,
                                text=True, timeout=60)
        assert during.returncode == 0, during.stderr
        assert during.stdout.split() == ["T", "S"]  # trainer stopped, decoy asleep as before
        assert _state(trainer.pid) != "T"
        assert _state(paused.pid) == "T", "a nested quiet continued a trainer it did not stop"
    finally:
        for proc in (trainer, paused, decoy):
            proc.kill()
            proc.wait()


def test_weight_mean_averages_the_files_and_scores_the_mean(tiny_run, tmp_path, monkeypatch,
                                                             capsys):
    import importlib.util

    import torch

    from resnets.weights.sr import load_sr_weights, save_sr_weights

    spec = importlib.util.spec_from_file_location("sr_weight_mean", SCRIPTS / "sr_weight_mean.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    model = load_sr_weights(tiny_run / "model.safetensors")
    shifted = load_sr_weights(tiny_run / "model.safetensors")
    with torch.no_grad():
        for p in shifted.parameters():
            p.add_(1.0)
    save_sr_weights(shifted, tmp_path / "shifted.safetensors")
    mean = script.mean_model([tiny_run / "model.safetensors", tmp_path / "shifted.safetensors"])
    for (name, a), b in zip(model.named_parameters(), mean.parameters(), strict=True):
        assert torch.allclose(b, a + 0.5, atol=1e-6), name
    ref = one_image_sr_ref(tmp_path / "ref", scales=(2,))
    monkeypatch.setattr("sys.argv", ["sr_weight_mean.py", str(tiny_run / "best.pt"),
                                     str(tiny_run / "model.safetensors"), "--sets", "Set5",
                                     "--scales", "2", "--data", str(ref)])
    script.main()
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["files"] == ["best.pt", "model.safetensors"] and record["mean_of"] == 2
    assert 20 < record["Set5_x2"] < 45 and set(record) >= {"eval_s", "threads"}
