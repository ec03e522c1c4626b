"""Ablation of the `fast` recipe: remove one choice at a time, same epochs, several seeds.

Each arm is the `fast` recipe with exactly one field changed; every (arm, seed) is a normal
`resnets train` run in its own folder under ``--out`` (so an interrupted ablation resumes:
finished runs are skipped, unfinished ones continue from their last checkpoint). Several
workers can share one ``--out`` (e.g. one per core): each claims a run with a lock file
holding its PID and skips runs claimed by a live worker; the last worker to finish prints
the full table, and running the script again prints it from the finished runs. Choices
are judged on the held-out validation split; test accuracy (the best-val checkpoint,
single view and flip TTA) is reported beside it, never used to choose.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablation_fast_recipe.py \
        --data ../shared/data/cifar10 --epochs 5 --seeds 0,1 --out runs/ablation
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from resnets.train import train
from resnets.train.config import fast_recipe

#: arm name -> the one field it changes relative to `fast` (and what that removes)
ARMS: dict[str, dict] = {
    "fast": {},
    "no-ema": {"ema_decay": 0.0},
    "ema-no-warmup": {"ema_warmup": False},
    "no-label-smoothing": {"label_smoothing": 0.0},
    "no-nesterov": {"nesterov": False},
    "decay-bn-bias": {"no_decay_bn_bias": False},
    "step-schedule": {"schedule": "step"},
}


def _claim(out: Path) -> Path | None:
    """Create ``out/.claimed`` with our PID; None if a live worker holds it. A lock left by
    a dead worker is taken over."""
    out.mkdir(parents=True, exist_ok=True)
    lock = out / ".claimed"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or 0), 0)
                return None  # a live worker has it
            except (ProcessLookupError, ValueError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # its worker died; take it over
                continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return lock
    return None


def run_arm(arm: str, seed: int, args) -> dict | None:
    """The run's result; None if another worker is training it."""
    out = Path(args.out) / f"{arm}-s{seed}"
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    lock = _claim(out)
    if lock is None:
        return None
    try:
        if done.exists():  # finished between our check and our claim
            return json.loads(done.read_text())
        cfg = fast_recipe(model=args.model, data=args.data, epochs=args.epochs, seed=seed,
                          out=str(out), **ARMS[arm])
        start = time.perf_counter()
        result = train(cfg, resume=(out / "last.pt").exists(), quiet=True)
        result["wall_s_this_session"] = time.perf_counter() - start
        return result
    finally:
        lock.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/cifar10")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = args.arms.split(",")
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise SystemExit(f"unknown arm(s) {sorted(unknown)}: expected some of {list(ARMS)}")

    rows = {}
    for seed in seeds:  # seed-major, so a cut-off run has every arm at seed 0 first
        for arm in arms:
            r = run_arm(arm, seed, args)
            if r is None:
                print(f"{arm:20s} seed {seed}: being trained by another worker", flush=True)
                continue
            rows.setdefault(arm, []).append(r)
            print(f"{arm:20s} seed {seed}: val {r['best_val_acc']:.2f}  "
                  f"test {r['test_acc']:.2f}  tta {r['test_acc_flip_tta']:.2f}", flush=True)
    missing = [f"{a}-s{s}" for s in seeds for a in arms
               if not (Path(args.out) / f"{a}-s{s}" / "result.json").exists()]
    if missing:
        print(f"\nnot finished yet (another worker has them): {', '.join(missing)}; "
              "run this again when they are done for the table")
        return
    # every run is finished (some perhaps by another worker): the table reads them all
    rows = {a: [json.loads((Path(args.out) / f"{a}-s{s}" / "result.json").read_text())
                for s in seeds] for a in arms}

    def stats(arm, key):
        v = [r[key] for r in rows[arm]]
        return statistics.mean(v), (max(v) - min(v)) / 2

    base_val = stats("fast", "best_val_acc")[0] if "fast" in rows else None
    print(f"\n{args.model}, {args.epochs} epochs, seeds {seeds}; mean (± half-range)")
    print("| arm | val acc | Δ val vs fast | test acc | test flip TTA |")
    print("|---|---|---|---|---|")
    summary = {}
    for arm in arms:
        val, val_hr = stats(arm, "best_val_acc")
        test, test_hr = stats(arm, "test_acc")
        tta, _ = stats(arm, "test_acc_flip_tta")
        delta = f"{val - base_val:+.2f}" if base_val is not None else "-"
        print(f"| {arm} | {val:.2f} ± {val_hr:.2f} | {delta} | {test:.2f} ± {test_hr:.2f} "
              f"| {tta:.2f} |")
        summary[arm] = {"change": ARMS[arm], "val_acc": [r["best_val_acc"] for r in rows[arm]],
                        "test_acc": [r["test_acc"] for r in rows[arm]],
                        "test_acc_flip_tta": [r["test_acc_flip_tta"] for r in rows[arm]]}
    path = Path(args.out) / "summary.json"
    path.write_text(json.dumps({"model": args.model, "epochs": args.epochs, "seeds": seeds,
                                "arms": summary}, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
