"""Score SR weights on the report sets, or the mean of several of the same network.

Each file is a train-sr checkpoint (``best.pt``, ``last.pt``) or SR weights
(``.safetensors``); with more than one, their tensors are averaged (weights of one run's
lineage: a cheap "model soup") and the mean is scored. fp32 eager, the code ``sr-eval``
runs, on the matlab_ref images; one JSON line out::

    OMP_NUM_THREADS=2 .venv/bin/python scripts/sr_weight_mean.py \
        ~/resnets-runs/sr-edsr_baseline-x234-20k-best-step19000.pt \
        ~/resnets-runs/sr-edsr_baseline-x234-ft144/best.pt --scales 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from resnets.tasks.sr_eval import evaluate_sr
from resnets.train.sr import checkpoint_model
from resnets.weights.sr import load_sr_weights

REF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sr" / "matlab_ref"


def load(path: Path) -> torch.nn.Module:
    if path.suffix == ".pt":
        return checkpoint_model(path)[0]
    return load_sr_weights(path).eval()


def mean_model(paths: list[Path]) -> torch.nn.Module:
    """The first file's network with every floating-point tensor the mean over the files."""
    models = [load(p) for p in paths]
    states = [m.state_dict() for m in models]
    if any(s.keys() != states[0].keys() for s in states):
        raise SystemExit("error: the files hold different networks (their tensors differ)")
    mean = {k: (torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
                if v.is_floating_point() else v) for k, v in states[0].items()}
    models[0].load_state_dict(mean)
    return models[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--sets", default="Set5,Set14")
    ap.add_argument("--scales", default="", help="default: every scale of the network")
    ap.add_argument("--data", type=Path, default=REF, help="a matlab_ref-shaped folder")
    args = ap.parse_args()
    model = mean_model(args.files)
    scales = ([int(s) for s in args.scales.split(",")] if args.scales
              else list(getattr(model, "scales", (2, 3, 4))))
    record: dict = {"files": [p.name for p in args.files], "mean_of": len(args.files)}
    start = time.perf_counter()
    for name in args.sets.split(","):
        for s in scales:
            record[f"{name}_x{s}"] = round(evaluate_sr(model, args.data / name / f"x{s}",
                                                       s).mean()[0], 4)
    record["eval_s"] = round(time.perf_counter() - start, 1)
    record["threads"] = torch.get_num_threads()
    print(json.dumps(record))


if __name__ == "__main__":
    main()
