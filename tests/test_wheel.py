"""The installed package works on its own: a wheel built from this checkout, installed (not
editable) into a fresh virtual environment, classifies and upscales with its bundled
weights from a folder that has no checkout in sight."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "OMP_NUM_THREADS": "1",
           "TORCH_HOME": str(cwd / "torch-home")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_wheel_installs_and_runs_predict_and_upscale_outside_the_checkout(tmp_path):
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("resnets-*.whl")
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # The dependencies (torch ...) come from this interpreter's site-packages as a plain
    # path entry: the .pth files there (the checkout's editable install) are not run.
    deps = Path(sysconfig.get_paths()["purelib"])
    env_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                          "['purelib'])"], tmp_path).stdout.strip())
    (env_site / "_deps.pth").write_text(f"{deps}\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                                "-q", "--no-deps", "--no-index", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(EXAMPLES / "images" / "cat_0007.jpg", work / "cat.jpg")
    shutil.copy(EXAMPLES / "sr" / "butterfly.png", work / "butterfly.png")
    where = _run([str(python), "-c", "import resnets; print(resnets.__file__)"], work)
    assert where.returncode == 0, where.stderr
    assert str(env_site) in where.stdout and str(ROOT) not in where.stdout

    cli = [str(env_dir / "bin" / "resnets")]  # the console script the wheel installs
    # --backend torch: what is checked here is the package's files (weights, records,
    # class names) once installed; exporting to the fast backends is tested in-process
    pred = _run([*cli, "predict", "cat.jpg", "--json", "--top-k", "1", "--backend", "torch"],
                work)
    assert pred.returncode == 0, pred.stderr
    row = json.loads(pred.stdout.strip().splitlines()[-1])
    assert row["path"] == "cat.jpg" and row["top"][0]["class"] == "cat"
    up = _run([*cli, "upscale", "butterfly.png", "--scale", "2", "--quiet", "--backend", "torch"],
              work)
    assert up.returncode == 0, up.stderr
    assert (work / "butterfly_x2.png").stat().st_size > 10_000
