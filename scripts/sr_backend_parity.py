"""PSNR of an SR training run's ``best.pt`` on Set5 through every SR backend, beside fp32
eager: the parity check of issue #18 (item 4) for a model that is not bundled yet.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/sr_backend_parity.py \
        ~/resnets-runs/sr-edsr_baseline-x234 --bench Set5

Prints one line per (scale, backend) and a JSON record at the end (difference to eager in
dB). A bundled model is checked by ``resnets sr-eval --backend B`` and
tests/export/test_sr.py instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnets.export.sr import SR_BACKENDS
from resnets.tasks.sr_eval import evaluate_sr
from resnets.train.sr import checkpoint_model

REF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sr" / "matlab_ref"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--bench", default="Set5")
    ap.add_argument("--ref", type=Path, default=REF, help="the matlab_ref folder")
    ap.add_argument("--backends", default=",".join(SR_BACKENDS))
    args = ap.parse_args()
    model, cfg, step = checkpoint_model(args.run / "best.pt")
    record = {"run": args.run.name, "step": step,
              "bench": args.bench, "psnr": {}, "vs_eager_db": {}}
    for scale in cfg["scales"]:
        for kind in args.backends.split(","):
            psnr, _ = evaluate_sr(model, args.ref / args.bench / f"x{scale}", scale,
                                  backend=kind).mean()
            record["psnr"][f"x{scale}_{kind}"] = round(psnr, 5)
            eager = record["psnr"].get(f"x{scale}_torch")
            if eager is not None:
                record["vs_eager_db"][f"x{scale}_{kind}"] = round(psnr - eager, 5)
            print(f"x{scale} {kind}: {psnr:.5f} dB", flush=True)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
