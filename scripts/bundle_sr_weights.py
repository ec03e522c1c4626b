"""Ship a finished ``resnets train-sr`` run inside the package, with its provenance.

    .venv/bin/python scripts/bundle_sr_weights.py /root/resnets-runs/sr-edsr_small \
        --command "resnets train-sr ..."

Copies ``RUN/model.safetensors`` (absolute paths in its metadata cut to run names) to
``src/resnets/weights/bundled/sr/<model>_x<scales>
.safetensors``, scores it with ``sr-eval``'s code on the matlab_ref Set5/Set14 images at
every scale it serves, and writes the provenance JSON beside it (the tests recompute it).
A fine-tuned run's record says what it started from (``started_from``: the file, the
step, the config of the run that trained it). Other bundled models stay; the record's
Set5/Set14 PSNR decides which one is the default.
``--store-dtype float16`` rounds the weights to half precision in the file (half the size;
loading casts them back to float32); the record's scores are those of the stored weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from resnets.files import atomic_write
from resnets.tasks.sr_eval import evaluate_sr
from resnets.train.sr import pretrained_origin
from resnets.weights.provenance import copy_without_machine_paths, strip_machine_paths
from resnets.weights.sr import BUNDLED_SR_DIR, load_sr_weights

REF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sr" / "matlab_ref"
# Published PSNR (Y, dB) of the bars the issue sets (shared/data/README.md).
SRCNN = {("Set5", 2): 36.66, ("Set5", 3): 32.75, ("Set5", 4): 30.48,
         ("Set14", 2): 32.42, ("Set14", 3): 29.28, ("Set14", 4): 27.49}
VDSR = {("Set5", 2): 37.53, ("Set5", 3): 33.66, ("Set5", 4): 31.35,
        ("Set14", 2): 33.03, ("Set14", 3): 29.77, ("Set14", 4): 28.01}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--command", required=True)
    ap.add_argument("--store-dtype", choices=("float32", "float16"), default="float32",
                    help="the weights' dtype in the bundled file")
    args = ap.parse_args()
    run = Path(args.run)
    cfg = json.loads((run / "config.json").read_text())
    scales = cfg["scales"]
    BUNDLED_SR_DIR.mkdir(parents=True, exist_ok=True)
    dest = BUNDLED_SR_DIR / f"{cfg['model']}_x{''.join(map(str, scales))}.safetensors"
    for old in (dest, dest.with_suffix(".json")):  # other bundled models stay: the records
        old.unlink(missing_ok=True)                # rank them (weights.sr.bundled_sr_files)
    copy_without_machine_paths(run / "model.safetensors", dest,  # runs, not paths
                               getattr(torch, args.store_dtype))
    model = load_sr_weights(dest)
    scores = {}
    for bench in ("Set5", "Set14"):
        for s in scales:
            ev = evaluate_sr(model, REF / bench / f"x{s}", s)
            (p, ss), (bp, bs) = ev.mean(), ev.bicubic_mean()
            scores[f"{bench}_x{s}"] = {
                "psnr": p, "ssim": ss, "bicubic_psnr": bp, "bicubic_ssim": bs,
                "srcnn_psnr": SRCNN[(bench, s)], "vdsr_psnr": VDSR[(bench, s)],
                "beats_srcnn": p > SRCNN[(bench, s)],
                # published to 2 decimals: "at" VDSR is equal once rounded the same way
                "at_or_above_vdsr": round(p, 2) >= VDSR[(bench, s)]}
            print(f"{bench} x{s}: {p:.2f} dB / {ss:.4f} (bicubic {bp:.2f}, SRCNN "
                  f"{SRCNN[(bench, s)]}, VDSR {VDSR[(bench, s)]})")
    result = json.loads((run / "result.json").read_text())
    record = {"model": cfg["model"], "file": dest.name, "scales": scales,
              "sha256": hashlib.sha256(dest.read_bytes()).hexdigest(),
              "parameters": sum(p.numel() for p in model.parameters()),
              "stored_dtype": args.store_dtype,
              "trained_on": "T91 + BSD200 less the held-out validation images",
              "config": cfg, "validation": {k: v for k, v in result.items() if "val" in k},
              "benchmarks": scores, "command": args.command}
    if cfg.get("pretrained"):  # a fine-tune: what it started from, back to the first run
        record["started_from"] = pretrained_origin(cfg["pretrained"])
    text = json.dumps(strip_machine_paths(record), indent=1) + "\n"
    atomic_write(dest.with_suffix(".json"), lambda tmp: tmp.write_text(text))


if __name__ == "__main__":
    main()
