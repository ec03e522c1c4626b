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

from resnets.tasks.sr_eval import evaluate_sr
from resnets.train.sr import checkpoint_model

REF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sr" / "matlab_ref"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--checkpoint", default="best.pt")
    ap.add_argument("--sets", default="Set5")
    ap.add_argument("--ref", type=Path, default=REF, help="the matlab_ref folder")
    args = ap.parse_args()
    model, cfg, step = checkpoint_model(args.run / args.checkpoint)
    scales = tuple(cfg["scales"])
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
