"""Time to accuracy: the `fast` recipe against the `paper` recipe at the same epoch budget.

Reads two finished run folders trained with ``--test-every-epoch`` (the test split is
evaluated every epoch for this report only; each run selects its final checkpoint as
``resnets train`` does: on the validation split, or on the training loss when trained
without one) and prints, for each, test accuracy along the way, the first epoch
and the training wall time at which the target is reached, and the final result.

    .venv/bin/python benchmarks/time_to_accuracy.py --fast runs/r20-fast \
        --paper runs/r20-paper --target 88.0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load_run(path: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    if not rows or "test_acc" not in rows[0]:
        raise SystemExit(f"{path}: no per-epoch test accuracy (train with --test-every-epoch)")
    result = json.loads((path / "result.json").read_text())
    return rows, result


def first_reaching(rows: list[dict], target: float) -> tuple[int, float] | None:
    wall = 0.0
    for r in rows:
        wall += r["epoch_time_s"]
        if r["test_acc"] >= target:
            return r["epoch"], wall
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", required=True, type=Path)
    ap.add_argument("--paper", required=True, type=Path)
    ap.add_argument("--target", type=float, default=88.0)
    ap.add_argument("--every", type=int, default=10, help="print every N epochs")
    args = ap.parse_args()
    runs = {"fast": load_run(args.fast), "paper": load_run(args.paper)}
    epochs = min(len(r[0]) for r in runs.values())

    print("| epoch | fast test % | paper test % | fast train s | paper train s |")
    print("|---|---|---|---|---|")
    walls = {k: 0.0 for k in runs}
    for e in range(epochs):
        for k in runs:
            walls[k] += runs[k][0][e]["epoch_time_s"]
        if (e + 1) % args.every == 0 or e + 1 == epochs:
            print(f"| {e + 1} | {runs['fast'][0][e]['test_acc']:.2f} | "
                  f"{runs['paper'][0][e]['test_acc']:.2f} | {walls['fast']:.0f} | "
                  f"{walls['paper']:.0f} |")
    summary = {}
    for k, (rows, result) in runs.items():
        hit = first_reaching(rows, args.target)
        summary[k] = {"epochs": len(rows), "final_test_acc": result["test_acc"],
                      "final_test_acc_flip_tta": result["test_acc_flip_tta"],
                      "best_epoch": result["best_epoch"],
                      "train_wall_s": sum(r["epoch_time_s"] for r in rows),
                      "first_epoch_at_target": hit[0] if hit else None,
                      "train_wall_s_at_target": hit[1] if hit else None}
        reach = (f"reaches {args.target}% at epoch {hit[0]} after {hit[1] / 60:.1f} min of "
                 f"training" if hit else f"never reaches {args.target}%")
        # runs from before `selected_on` existed stored the negated train loss as their
        # "val" accuracy when trained without a validation split
        picked = result.get("selected_on") or (
            "train_loss" if (result.get("best_val_acc") or -1) < 0 else "val_acc")
        print(f"{k}: {len(rows)} epochs, final (checkpoint of epoch {result['best_epoch']}, "
              f"selected on {picked}) test "
              f"{result['test_acc']:.2f}% / flip TTA {result['test_acc_flip_tta']:.2f}%; "
              f"{reach}")
    hit = summary["fast"]["first_epoch_at_target"]
    if hit is not None and hit <= len(runs["paper"][0]):
        at = runs["paper"][0][hit - 1]["test_acc"]
        summary["paper"]["test_acc_at_fast_epoch"] = at
        print(f"at epoch {hit}, where fast reaches {args.target}%, paper is at {at:.2f}% "
              f"({at - args.target:+.2f})")
    print(json.dumps({"target": args.target, "runs": summary}))


if __name__ == "__main__":
    main()
