"""`resnets predict` end to end against a plain torchvision script (issue 17, item 3).

Each case is a fresh subprocess timed wall-clock (imports, model loading, conversion or
calibration, decoding, inference, printing), on the same folder, in interleaved rounds:

- ``default``: ``resnets predict DIR --json --top-k 1`` (backend ``auto``: the fastest exact
  fp32 backend installed);
- ``int8``, ``onnxruntime-int8`` (and, asked for, ``openvino-int8``): the same with
  ``--backend ...``, calibrated on the inputs as predict does by default; ``int8`` runs the
  fastest int8 backend installed (the report names it, from predict's note). Every int8 and
  converted fp32 model is cached in the warm-up round, so the timed rounds do not calibrate;
- ``plain``: a 20-line script, torchvision ``ImageFolder`` + ``DataLoader`` + eager fp32,
  with the bundled ResNet-56 (``resnets.load_classifier`` only hands over the weights; the
  preprocessing is written out in the script).

One untimed warm-up round first fills the file cache and resnets' model cache (its times
are reported as ``first``); then ``--repeats`` timed rounds, cases in a rotated order each
round. Prints medians, each case's ratio to ``plain`` (speed-up) and top-1 against the folder
labels. Run on a quiet machine (nothing else running):

    .venv/bin/python benchmarks/bench_predict_e2e.py --repeats 5 --out bench-predict.json
    .venv/bin/python benchmarks/bench_predict_e2e.py --limit 200 --repeats 1   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10" / "test"

PLAIN_SCRIPT = '''\
import json, sys
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
import resnets

model = resnets.load_classifier("resnet56").model.eval()  # only the weights
preprocess = transforms.Compose([  # 32 px, CIFAR-10 statistics (the weights' record)
    transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor(),
    transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])
data = datasets.ImageFolder(sys.argv[1], transform=preprocess)
loader = DataLoader(data, batch_size=64, num_workers=int(sys.argv[2]))
i = 0
with torch.inference_mode():
    for x, _ in loader:
        for c in model(x).argmax(1).tolist():
            print(json.dumps({"path": data.samples[i][0], "class": data.classes[c]}))
            i += 1
'''


def subset(data: Path, limit: int, work: Path) -> Path:
    """A class-folder tree of symlinks to the first ``limit`` images, spread over classes."""
    classes = sorted(d for d in data.iterdir() if d.is_dir())
    per_class = max(1, limit // len(classes))
    for c in classes:
        (work / c.name).mkdir(parents=True)
        for f in sorted(c.iterdir())[:per_class]:
            (work / c.name / f.name).symlink_to(f.resolve())
    return work


def commands(data: Path, plain: Path, workers: int, cases: list[str]) -> dict[str, list[str]]:
    resnets = [sys.executable, "-m", "resnets", "predict", str(data), "--json", "--top-k", "1"]
    every = {"default": resnets,
             "int8": [*resnets, "--backend", "int8"],
             "onnxruntime-int8": [*resnets, "--backend", "onnxruntime-int8"],
             "openvino-int8": [*resnets, "--backend", "openvino-int8"],
             "plain": [sys.executable, str(plain), str(data), str(workers)]}
    return {name: every[name] for name in cases}


def top1(stdout: str) -> tuple[float, int]:
    """(top-1 %, count) of JSON lines, the label being each path's parent folder."""
    right = n = 0
    for line in stdout.splitlines():
        row = json.loads(line)
        predicted = row["class"] if "class" in row else row["top"][0]["class"]
        right += predicted == Path(row["path"]).parent.name
        n += 1
    return 100.0 * right / max(n, 1), n


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str, str]:
    """(wall seconds, stdout, stderr) of ``cmd``; exits when it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stdout, done.stderr


def resolved_backend(stderr: str) -> str | None:
    """What ``--backend int8`` ran, from predict's note (None for the other cases)."""
    marker = "note: --backend int8 runs "
    for line in stderr.splitlines():
        if line.startswith(marker):
            return line[len(marker):].split()[0]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="a folder of class folders")
    ap.add_argument("--limit", type=int, default=None, help="about this many images (quick)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds")
    ap.add_argument("--cases", default="default,int8,onnxruntime-int8,plain",
                    help="of default, int8, onnxruntime-int8, openvino-int8, plain")
    ap.add_argument("--plain-workers", type=int, default=2, help="the script's DataLoader "
                                                                 "workers")
    ap.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    args = ap.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"data not found: {args.data}")
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        data = subset(args.data, args.limit, work_dir / "data") if args.limit else args.data
        plain = work_dir / "plain_torchvision.py"
        plain.write_text(PLAIN_SCRIPT)
        env = {**os.environ, "RESNETS_CACHE": str(work_dir / "cache")}  # a cold cache
        cases = commands(data, plain, args.plain_workers, args.cases.split(","))
        names = list(cases)
        first, times, accuracy, runs = {}, {n: [] for n in names}, {}, {}
        for name in names:  # warm-up: file cache, model caches; checks the outputs
            first[name], stdout, stderr = run(cases[name], env)
            accuracy[name] = top1(stdout)
            runs[name] = resolved_backend(stderr)
            print(f"warm-up {name}: {first[name]:.1f} s, top-1 {accuracy[name][0]:.2f}% "
                  f"of {accuracy[name][1]}" + (f", runs {runs[name]}" if runs[name] else ""),
                  file=sys.stderr)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                times[name].append(run(cases[name], env)[0])
            print(f"round {r + 1}/{args.repeats} done", file=sys.stderr)
    median = {n: statistics.median(t) for n, t in times.items()}
    base = median.get("plain")
    report = {"data": str(args.data), "limit": args.limit, "repeats": args.repeats,
              "cpus": os.cpu_count(), "cases": {
                  n: {"median_s": median[n], "first_s": first[n], "times_s": times[n],
                      "runs": runs[n],
                      "speedup_vs_plain": base / median[n] if base else None,
                      "top1": accuracy[n][0], "images": accuracy[n][1]} for n in names}}
    print(f"{'case':<18}{'median s':>10}{'first s':>10}{'x plain':>9}{'top-1 %':>9}  runs")
    for n, c in report["cases"].items():
        ratio = f"{c['speedup_vs_plain']:.2f}" if c["speedup_vs_plain"] else "-"
        print(f"{n:<18}{c['median_s']:>10.2f}{c['first_s']:>10.2f}{ratio:>9}{c['top1']:>9.2f}"
              f"  {c['runs'] or ''}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
