"""How far `upscale`'s tiled path is from one untiled pass, in 8-bit grey levels.

The README's claim about tiles ("an untiled run up to float rounding") comes from this:
a crop of a real photo, upscaled whole and in tiles (with the context padding and blended
overlaps that `upscale` uses), both rounded to 8 bits as the PNG would be, then compared.

    PYTHONPATH=src .venv/bin/python scripts/tiled_seams.py \\
        [--model NAME | --weights FILE] [--image PATH] [--crop 300] [--tile 128]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from resnets.tasks.upscale import load_picture, upscale_tensor
from resnets.weights.sr import get_sr_model

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sr" / \
    "BSD200" / "108041.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundled SR model (default: the best one)")
    ap.add_argument("--weights", default=None, help="safetensors file instead")
    ap.add_argument("--image", default=str(DEFAULT_IMAGE))
    ap.add_argument("--crop", type=int, default=300, help="side of the top-left crop")
    ap.add_argument("--tile", type=int, default=128, help="tile side in input pixels")
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, label = get_sr_model(args.model, args.weights)
    x = load_picture(args.image).color[:, :args.crop, :args.crop]
    for scale in map(int, args.scales.split(",")):
        with torch.inference_mode():
            whole = upscale_tensor(model, x, scale, tile=None)
            tiled = upscale_tensor(model, x, scale, tile=args.tile)
        q_whole = (whole.clamp(0, 1) * 255).round()
        q_tiled = (tiled.clamp(0, 1) * 255).round()
        diff = (q_whole - q_tiled).abs()
        print(json.dumps({
            "model": label, "image": Path(args.image).name, "crop": list(x.shape[1:]),
            "tile": args.tile, "scale": scale, "values": diff.numel(),
            "values_differing": int((diff > 0).sum()),
            "max_grey_levels": int(diff.max()),
            "max_float_difference": float((whole - tiled).abs().max()),
        }))


if __name__ == "__main__":
    main()
