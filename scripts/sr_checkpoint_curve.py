"""Score a train-sr run's checkpoint on the report sets, to follow a long run's curve.

A run scores Set5/Set14 only when it finishes (``report_sets``); a run of many sessions
needs the curve earlier to decide whether it will reach its goal. This loads a checkpoint
(``best.pt`` by default: the best on the held-out validation images, so nothing is chosen
on Set5/Set14), evaluates it in fp32 eager mode on every scale of the run, and appends one
JSON line to ``--log``::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/sr_checkpoint_curve.py \
        ~/resnets-runs/sr-edsr_baseline-x234 --log docs/sr/edsr_baseline_x234-curve.jsonl
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from resnets.tasks.sr_eval import evaluate_sr
from resnets.train.sr import checkpoint_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="train-sr run folder")
    ap.add_argument("--checkpoint", default="best.pt")
    ap.add_argument("--sets", default="Set5,Set14")
    ap.add_argument("--report-data", default="", help="default: the run's DATA/matlab_ref")
    ap.add_argument("--log", type=Path, help="JSONL file to append the record to")
    args = ap.parse_args()

    model, cfg, step = checkpoint_model(args.run / args.checkpoint)
    scales = tuple(cfg["scales"])
    record: dict = {"run": args.run.name, "checkpoint": args.checkpoint, "step": step,
                    "model": cfg["model"]}
    rows = list(csv.DictReader((args.run / "metrics.csv").open()))
    at = [r for r in rows if int(r["step"]) == step]
    if at:  # the held-out validation PSNR the run logged for these weights
        record.update({f"val_x{s}": round(float(at[0][f"val_psnr_x{s}"]), 3) for s in scales})
    root = Path(args.report_data or Path(cfg["data"]) / "matlab_ref")
    start = time.perf_counter()
    for name in args.sets.split(","):
        for s in scales:
            record[f"{name}_x{s}"] = round(evaluate_sr(model, root / name, s,
                                                       label=cfg["model"]).mean()[0], 3)
    record["eval_s"] = round(time.perf_counter() - start, 1)
    record["measured"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    record["threads"] = torch.get_num_threads()
    line = json.dumps(record)
    print(line)
    if args.log:
        with args.log.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
