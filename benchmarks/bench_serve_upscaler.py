"""What `resnets serve`'s upscaler costs: its start with an empty and a filled model cache,
and one picture's latency through the backend `--sr-backend auto` picks against eager PyTorch.

The server makes every scale's graph at start (``resnets.serve.models.load_models`` calls
``load_sr_backend(..., scales=...)``), so the start is timed the same way, each in a fresh
process (nothing kept in memory between them): the first with an empty ``RESNETS_CACHE``
(converting), the second reading what the first wrote. The latency is ``upscale_png``'s
work (tiles, model, PNG encode) on a 256x256 picture, interleaved repeats, medians.

    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/bench_serve_upscaler.py \\
        [--model NAME] [--threads 2] [--repeats 7] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sr" / "butterfly.png"


def start_once(model: str | None, backend: str, threads: int) -> dict:
    """In this process: the model and its backend with every scale's graph, timed."""
    import torch

    from resnets.export.sr import load_sr_backend
    from resnets.weights.sr import get_sr_model

    torch.set_num_threads(threads)
    start = time.perf_counter()
    sr_model, label = get_sr_model(model)
    scales = tuple(getattr(sr_model, "scales", None) or (2, 3, 4))
    upscaler = load_sr_backend(backend, sr_model, scales=scales)
    return {"model": label, "backend": upscaler.kind, "scales": list(scales),
            "start_s": time.perf_counter() - start}


def timed_start(model: str | None, backend: str, threads: int, cache: str) -> dict:
    cmd = [sys.executable, __file__, "--child-start", "--backend", backend,
           "--threads", str(threads)] + (["--model", model] if model else [])
    env = {**os.environ, "RESNETS_CACHE": cache, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def latency(model: str | None, backend: str, threads: int, repeats: int,
            cache: str) -> dict:
    import torch
    from PIL import Image

    from resnets.export.sr import load_sr_backend
    from resnets.serve.models import png_bytes
    from resnets.tasks.upscale import picture_from_image, to_pil, upscale_picture
    from resnets.weights.sr import get_sr_model

    os.environ["RESNETS_CACHE"] = cache  # read from the cache the starts filled
    torch.set_num_threads(threads)
    sr_model, _ = get_sr_model(model)
    scales = (2, 4)
    runs = {"auto": load_sr_backend(backend, sr_model, scales=scales),
            "eager": load_sr_backend("torch", sr_model, scales=scales)}
    picture = picture_from_image(Image.open(SAMPLE).convert("RGB").crop((0, 0, 256, 256)))
    times: dict[str, list[float]] = {f"{k}-x{s}": [] for k in runs for s in scales}
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        for scale in scales:
            for name, run in runs.items():
                start = time.perf_counter()
                png_bytes(to_pil(upscale_picture(run, picture, scale, tile=256)))
                times[f"{name}-x{scale}"].append(time.perf_counter() - start)
    medians = {k: statistics.median(v[1:]) for k, v in times.items()}
    return {"auto_backend": runs["auto"].kind, "picture": "256x256",
            "median_s": medians,
            "eager_over_auto": {f"x{s}": medians[f"eager-x{s}"] / medians[f"auto-x{s}"]
                                for s in scales}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundled SR model (default: the best one)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--child-start", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_start:
        print(json.dumps(start_once(args.model, args.backend, args.threads)))
        return
    with tempfile.TemporaryDirectory() as cache:
        cold = timed_start(args.model, args.backend, args.threads, cache)
        warm = timed_start(args.model, args.backend, args.threads, cache)
        result = {"model": cold["model"], "backend": cold["backend"],
                  "scales": cold["scales"], "threads": args.threads,
                  "start_empty_cache_s": cold["start_s"], "start_filled_cache_s": warm["start_s"],
                  **latency(args.model, args.backend, args.threads, args.repeats, cache)}
    print(f"{result['model']} via {result['backend']}: start {cold['start_s']:.1f} s with an "
          f"empty cache, {warm['start_s']:.1f} s from the cache (scales {cold['scales']})")
    for s in (2, 4):
        m = result["median_s"]
        print(f"  256x256 x{s}: {m[f'auto-x{s}']:.3f} s against eager {m[f'eager-x{s}']:.3f} s "
              f"(eager / auto {result['eager_over_auto'][f'x{s}']:.2f}x)")
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
