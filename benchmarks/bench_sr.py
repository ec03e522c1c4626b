"""Super-resolution: speed per model and backend, and quality beside the published methods.

``speed``: output megapixels per second of every bundled SR model through every installed
backend (``resnets.export.sr``: torch fp32 eager, bf16 autocast, onnxruntime, OpenVINO) at
x2 and x4, run the way ``resnets upscale`` runs a photo (tiles of 256 LR pixels with 16 px
of context and overlap), on a 12-megapixel output (4000x3000: LR 2000x1500 at x2, 1000x750
at x4) made from ``examples/sr/butterfly.png``. One warm-up per runner, then interleaved
repeats (every model x backend once per round); medians, min-max, and the ratio to fp32
eager of the same model. Setup (exporting or converting the graph, or reading OpenVINO's
cache) is timed apart. Decoding and PNG encoding are not included.

``quality``: PSNR / SSIM (Y, scale px shaved, the matlab_ref LR images) on Set5 and Set14
at x2/x3/x4: bicubic and every bundled model, single pass and self-ensemble x8, each
labelled, beside the published SRCNN, VDSR and EDSR-baseline figures
(``resnets.tasks.sr_eval.PUBLISHED``, which cites them).

    .venv/bin/python benchmarks/bench_sr.py speed --threads 2 --repeats 3
    .venv/bin/python benchmarks/bench_sr.py quality --data ../shared/data/sr/matlab_ref
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from resnets.export.sr import SR_BACKENDS
from resnets.tasks.sr_eval import PUBLISHED, evaluate_sr
from resnets.tasks.upscale import inference_model, upscale_tensor
from resnets.weights.sr import bundled_sr_files, get_sr_model

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sr" / "butterfly.png"
REF = Path(__file__).resolve().parents[2] / "shared" / "data" / "sr" / "matlab_ref"
OUT_SIZE = (3000, 4000)  # (H, W) of the output: 12 megapixels, a 4:3 photo
PUBLISHED_METHODS = ("SRCNN", "VDSR", "EDSR-baseline")
NEEDS = {"onnxruntime": ("onnx", "onnxruntime", "onnxscript"), "openvino": ("openvino",)}


def installed_backends() -> list[str]:
    import importlib.util

    return [k for k in SR_BACKENDS
            if all(importlib.util.find_spec(m) for m in NEEDS.get(k, ()))]


def lr_input(scale: int, out_size: tuple[int, int]) -> torch.Tensor:
    """A (3, H, W) float LR image whose x``scale`` output is ``out_size`` (H, W)."""
    h, w = out_size[0] // scale, out_size[1] // scale
    img = Image.open(SAMPLE).convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


def speed(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    names = args.models or [f.stem for f in bundled_sr_files()]
    kinds = args.backends or installed_backends()
    out_size = tuple(args.out_size)
    out_mp = out_size[0] * out_size[1] / 1e6
    rows = []
    for scale in args.scales:
        x = lr_input(scale, out_size)
        runners, setup = {}, {}
        for name in names:
            model, _ = get_sr_model(name)
            for kind in kinds:
                start = time.perf_counter()
                run = inference_model(model, kind, threads=args.threads, scales=(scale,))
                setup[(name, kind)] = time.perf_counter() - start
                with torch.inference_mode():
                    upscale_tensor(run, x[:, :300, :300], scale)  # warm-up
                runners[(name, kind)] = run
        times: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
        for _ in range(args.repeats):
            for key, run in runners.items():
                start = time.perf_counter()
                with torch.inference_mode():
                    upscale_tensor(run, x, scale)
                times[key].append(time.perf_counter() - start)
        for (name, kind), t in times.items():
            eager = statistics.median(times[(name, "torch")]) if (name, "torch") in times \
                else float("nan")
            med = statistics.median(t)
            rows.append({"model": name, "backend": kind, "scale": scale,
                         "mp_per_s": out_mp / med, "mp_per_s_min": out_mp / max(t),
                         "mp_per_s_max": out_mp / min(t), "seconds_12mp": med,
                         "speedup_vs_eager": eager / med, "setup_s": setup[(name, kind)],
                         "times": t})
    return {"threads": args.threads, "repeats": args.repeats, "output": list(out_size),
            "torch": torch.__version__, "rows": rows}


def print_speed(report: dict) -> None:
    h, w = report["output"]
    print(f"{w}x{h} output ({w * h / 1e6:g} MP), {report['threads']} threads, "
          f"{report['repeats']} interleaved repeats, torch {report['torch']}")
    print(f"| model | backend | scale | MP/s median (min-max) | {w * h / 1e6:g} MP photo "
          "| vs fp32 eager | setup |")
    print("|---|---|---|---|---|---|---|")
    for r in report["rows"]:
        print(f"| {r['model']} | {r['backend']} | x{r['scale']} | {r['mp_per_s']:.2f} "
              f"({r['mp_per_s_min']:.2f}-{r['mp_per_s_max']:.2f}) | {r['seconds_12mp']:.1f} s "
              f"| {r['speedup_vs_eager']:.2f}x | {r['setup_s']:.1f} s |")


def quality(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    names = args.models or [f.stem for f in bundled_sr_files()]
    bicubic = get_sr_model("bicubic")[0]
    rows = []
    for bench in args.sets:
        for scale in args.scales:
            data = Path(args.data) / bench / f"x{scale}"
            row = {"set": bench, "scale": scale,
                   "bicubic": evaluate_sr(bicubic, data, scale, "bicubic").mean()}
            for name in names:
                model, label = get_sr_model(name)
                row[name] = evaluate_sr(model, data, scale, label,
                                        backend=args.backend).mean()
                if args.self_ensemble:
                    row[f"{name}, self-ensemble x8"] = evaluate_sr(
                        model, data, scale, label, backend=args.backend,
                        self_ensemble=True).mean()
            row["published"] = {m: PUBLISHED[(bench, scale)].get(m) for m in PUBLISHED_METHODS}
            rows.append(row)
            print(f"{bench} x{scale} done", flush=True)
    return {"backend": args.backend, "rows": rows}


def print_quality(report: dict) -> None:
    measured = [k for k in report["rows"][0] if k not in ("set", "scale", "published")]
    head = [*measured, *(f"{m} (published)" for m in PUBLISHED_METHODS)]
    print(f"PSNR (dB) / SSIM, Y channel, scale px shaved; our models through "
          f"{report['backend']}")
    print("| set, scale | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(head))
    for r in report["rows"]:
        cells = [f"{r[k][0]:.2f} / {r[k][1]:.4f}" for k in measured]
        cells += ["—" if r["published"][m] is None
                  else f"{r['published'][m][0]:.2f} / {r['published'][m][1]:.4f}"
                  for m in PUBLISHED_METHODS]
        print(f"| {r['set']} x{r['scale']} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--repeats", type=int, default=3)
    sp.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    sp.add_argument("--out-size", type=int, nargs=2, default=list(OUT_SIZE),
                    metavar=("H", "W"), help="output size; default 3000 4000 (12 MP)")
    sp.add_argument("--models", nargs="+", help="bundled names; default: every bundled one")
    sp.add_argument("--backends", nargs="+", choices=SR_BACKENDS,
                    help="default: every installed one")
    qp = sub.add_parser("quality")
    qp.add_argument("--data", default=str(REF))
    qp.add_argument("--threads", type=int, default=2)
    qp.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    qp.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    qp.add_argument("--models", nargs="+", help="bundled names; default: every bundled one")
    qp.add_argument("--backend", default="torch", choices=SR_BACKENDS)
    qp.add_argument("--no-self-ensemble", dest="self_ensemble", action="store_false")
    for p in (sp, qp):
        p.add_argument("--json", help="also write the report to this file")
    args = ap.parse_args()
    report = speed(args) if args.mode == "speed" else quality(args)
    (print_speed if args.mode == "speed" else print_quality)(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
