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
from resnets.models.sr import create_sr_model
from resnets.tasks.sr_eval import evaluate_sr
from resnets.train.run_folder import load_training_state
from resnets.weights.loading import load_state_dict_into

REF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sr" / "matlab_ref"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--bench", default="Set5")
    ap.add_argument("--ref", type=Path, default=REF, help="the matlab_ref folder")
    ap.add_argument("--backends", default=",".join(SR_BACKENDS))
    args = ap.parse_args()
    state = load_training_state(args.run / "best.pt")
    cfg = state["config"]
    model = create_sr_model(cfg["model"], scales=tuple(cfg["scales"]),
                            **cfg.get("model_kwargs", {}))
    load_state_dict_into(model, state["model"], label=str(args.run / "best.pt"),
                         model_name=cfg["model"], keep_head=True)
    model.eval()
    record = {"run": args.run.name, "step": state["epoch"] * cfg["steps_per_epoch"],
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
