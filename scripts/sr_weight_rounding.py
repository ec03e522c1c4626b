"""Set5 (and Set14) PSNR of an SR training run's checkpoint with its weights as trained and
rounded to fp16 and bf16: what storing the bundled file in half precision costs.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/sr_weight_rounding.py \
        ~/resnets-runs/sr-edsr_baseline-x234-16k --checkpoint last.pt
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from resnets.models.sr import create_sr_model
from resnets.tasks.sr_eval import evaluate_sr
from resnets.train.run_folder import load_training_state
from resnets.weights.loading import load_state_dict_into

REF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sr" / "matlab_ref"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--checkpoint", default="best.pt")
    ap.add_argument("--sets", default="Set5")
    ap.add_argument("--ref", type=Path, default=REF, help="the matlab_ref folder")
    args = ap.parse_args()
    state = load_training_state(args.run / args.checkpoint)
    cfg = state["config"]
    scales = tuple(cfg["scales"])
    model = create_sr_model(cfg["model"], scales=scales, **cfg.get("model_kwargs", {}))
    load_state_dict_into(model, state["model"], label=str(args.run / args.checkpoint),
                         model_name=cfg["model"], keep_head=True)
    model.eval()
    step = state["epoch"] * cfg["steps_per_epoch"] + state["step_in_epoch"]
    print(f"{args.run.name}/{args.checkpoint}, step {step}: PSNR (dB) at "
          + ", ".join(f"{s} x{x}" for s in args.sets.split(",") for x in scales))
    for dtype in (None, torch.float16, torch.bfloat16):
        rounded = copy.deepcopy(model)
        if dtype is not None:
            with torch.no_grad():
                for t in rounded.state_dict().values():
                    if t.is_floating_point():
                        t.copy_(t.to(dtype).float())
        scores = [evaluate_sr(rounded, args.ref / name / f"x{x}", x).mean()[0]
                  for name in args.sets.split(",") for x in scales]
        label = "fp32" if dtype is None else f"rounded to {str(dtype).removeprefix('torch.')}"
        print(f"{label:>20}: " + " / ".join(f"{v:.4f}" for v in scores), flush=True)


if __name__ == "__main__":
    main()
