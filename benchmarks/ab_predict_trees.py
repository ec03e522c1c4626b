"""`resnets predict` end to end, one source tree against another (issue 17, item 3).

Each case is a fresh ``python -m resnets predict DIR --json --top-k 1 [--backend B]`` with
``PYTHONPATH`` set to one tree's ``src`` (the same interpreter and packages for all), timed
wall-clock. One untimed warm-up round fills the file cache and a fresh ``RESNETS_CACHE``
that all trees share (model conversion, int8 calibration); then ``--repeats`` rounds, every
(tree, backend) case once per round in a rotated order. Prints medians, each tree's ratio to
the first tree, and whether each tree printed exactly what the first printed.

    ~/resnets-runs/bin/quiet .venv/bin/python benchmarks/ab_predict_trees.py \\
        --tree before=../main/src --tree after=src --backends auto,openvino-int8 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10" / "test"


def run_case(src: Path, backend: str, data: Path, cache: str) -> tuple[float, str]:
    """(seconds, a hash of stdout and the exit code) of one predict run."""
    cmd = [sys.executable, "-m", "resnets", "predict", str(data), "--json", "--top-k", "1"]
    if backend != "auto":
        cmd += ["--backend", backend]
    env = {**os.environ, "PYTHONPATH": str(src.resolve()), "RESNETS_CACHE": cache}
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True)
    seconds = time.perf_counter() - start
    if out.returncode not in (0, 1):
        raise SystemExit(f"{src} {backend} failed:\n{out.stderr.decode()[-2000:]}")
    return seconds, hashlib.sha256(out.stdout + bytes([out.returncode])).hexdigest()[:12]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", required=True,
                    help="NAME=PATH of a src folder; the first is the reference")
    ap.add_argument("--backends", default="auto,openvino-int8")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    trees = dict(item.split("=", 1) for item in args.tree)
    cases = [(name, backend) for backend in args.backends.split(",") for name in trees]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, data {args.data}")
    with tempfile.TemporaryDirectory() as cache:
        first = {c: run_case(Path(trees[c[0]]), c[1], args.data, cache) for c in cases}
        times: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
        outputs = {c: first[c][1] for c in cases}
        for r in range(args.repeats):
            for c in cases[r % len(cases):] + cases[:r % len(cases)]:
                seconds, digest = run_case(Path(trees[c[0]]), c[1], args.data, cache)
                times[c].append(seconds)
                if digest != outputs[c]:
                    outputs[c] = "varies"
    reference = next(iter(trees))
    print(f"{'backend':<15}{'tree':<12}{'median s':>9}{'x ' + reference:>12}  rounds s"
          "                same output")
    for name, backend in cases:
        median = statistics.median(times[name, backend])
        ratio = statistics.median(times[reference, backend]) / median
        same = outputs[name, backend] == outputs[reference, backend] != "varies"
        rounds = ", ".join(f"{t:.2f}" for t in times[name, backend])
        print(f"{backend:<15}{name:<12}{median:>9.2f}{ratio:>12.3f}  {rounds:<24}"
              f"{'yes' if same else 'NO'}   (first {first[name, backend][0]:.2f})")


if __name__ == "__main__":
    main()
