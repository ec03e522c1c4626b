"""Upscaling throughput on the CPU: megapixels of output per second.

The bundled super-resolution network (through ``resnets.tasks.upscale``'s tiled path, as
``resnets upscale`` runs it) against Pillow's bicubic resize, the floor any learned
upscaler is slower than. Same input image, same thread count, interleaved repeats.

    .venv/bin/python benchmarks/bench_upscale.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from resnets.tasks.upscale import upscale_tensor
from resnets.weights.sr import get_sr_model

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sr" / "butterfly.png"


def timed(fn, min_time: float) -> float:
    """Calls per second of ``fn`` over at least ``min_time`` seconds."""
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--size", type=int, default=256, help="input side (crop of the sample)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, label = get_sr_model()
    img = Image.open(SAMPLE).convert("RGB").crop((0, 0, args.size, args.size))
    x = torch.from_numpy(__import__("numpy").asarray(img).copy()).permute(2, 0, 1)
    x = x.float() / 255
    rows = []
    for scale in (2, 4):
        out_mp = (args.size * scale) ** 2 / 1e6
        cases = {
            "Pillow BICUBIC": lambda s=scale: img.resize((args.size * s,) * 2,
                                                         Image.Resampling.BICUBIC),
            f"resnets {label}": lambda s=scale: upscale_tensor(model, x, s),
        }
        with torch.inference_mode():
            for fn in cases.values():
                fn()  # warm-up
            speeds: dict[str, list[float]] = {k: [] for k in cases}
            for _ in range(args.repeats):
                for name, fn in cases.items():
                    speeds[name].append(timed(fn, args.min_time) * out_mp)
        for name, v in speeds.items():
            rows.append((scale, name, min(v), statistics.median(v), max(v)))
    print(f"{args.size}x{args.size} input, {args.threads} threads, torch {torch.__version__}")
    print(f"{'scale':>5} {'upscaler':40s} output MP/s min / median / max")
    for scale, name, lo, med, hi in rows:
        print(f"{scale:>5} {name:40s} {lo:8.3f} {med:8.3f} {hi:8.3f}")


if __name__ == "__main__":
    main()
