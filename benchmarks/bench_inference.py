"""CPU inference: every resnets backend against torchvision, onnxruntime and OpenVINO.

Settings (the issue's): ResNet-50 at batch 1 and 16 against torchvision eager fp32,
onnxruntime fp32 running the exported torchvision model, and onnxruntime's own static int8
quantization of it; the CIFAR ResNet-20 and ResNet-56 at batch 256 against the same model in
eager fp32 and its plain onnxruntime fp32/int8. With ``resnets[openvino]`` installed, our
OpenVINO fp32/int8 backends and plain OpenVINO fp32 and NNCF int8 peers join every run
(issue 17). Threads are pinned (2 by default) for PyTorch, onnxruntime and OpenVINO alike;
repeats are interleaved and ratios taken within a repeat. ``--accuracy`` adds fp32 / bf16 /
int8 (and OpenVINO int8) top-1 on the full CIFAR-10 test set for the bundled (or
``--weights``) CIFAR models, int8 calibrated on training images only.

Run on a quiet machine (nothing else busy; a full run takes tens of minutes on 2 cores):

    .venv/bin/python benchmarks/bench_inference.py --threads 2 --out bench-inference.json
    .venv/bin/python benchmarks/bench_inference.py --smoke     # seconds: resnet20, 1 repeat
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

from resnets.export.bench import BenchConfig, print_report, run_bench

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"
HAS_OPENVINO = all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))
OPENVINO = ("openvino", "openvino-int8") if HAS_OPENVINO else ()

RUNS = {
    "resnet50": BenchConfig(
        model="resnet50", batches=(1, 16),
        backends=("eager", "optimized", "compiled", "bf16", "onnxruntime", "onnxruntime-int8",
                  *OPENVINO),
        compare=("torchvision", "onnxruntime", "int8", *OPENVINO)),
    "resnet20": BenchConfig(
        model="resnet20", batches=(256,),
        backends=("optimized", "bf16", "onnxruntime", "onnxruntime-int8", *OPENVINO),
        compare=("onnxruntime", "int8", *OPENVINO)),
    "resnet56": BenchConfig(
        model="resnet56", batches=(256,),
        backends=("optimized", "bf16", "onnxruntime", "onnxruntime-int8", *OPENVINO),
        compare=("onnxruntime", "int8", *OPENVINO)),
}


def summarize(report: dict) -> list[str]:
    """One line per result: median ratio to the baseline and its min/max over repeats."""
    lines = [f"{report['model']} (ratios to {report['baseline']}, paired per repeat):"]
    for r in report["results"]:
        ratios = r["ratio_per_repeat"]
        ips = r["images_per_s_per_repeat"]
        lines.append(f"  batch {r['batch']:>3} {r['backend']:<32} "
                     f"{r['ratio_vs_torchvision']:6.2f}x (repeats {min(ratios):.2f}-"
                     f"{statistics.median(ratios):.2f}-{max(ratios):.2f}x), "
                     f"{r['images_per_s']:8.1f} img/s (min/med/max {min(ips):.1f}/"
                     f"{statistics.median(ips):.1f}/{max(ips):.1f}), "
                     f"max|diff| {r['max_abs_diff_vs_baseline']:.1e}")
    return lines


def cifar_accuracy(name: str, weights: str | None, threads: int, calib: int) -> dict:
    """Top-1 (%) on the full CIFAR-10 test set in fp32, bf16, int8 (and OpenVINO int8)."""
    import torch

    from resnets.data.folder import scan_folder
    from resnets.data.io import read_rgb
    from resnets.export import load_backend
    from resnets.export.int8 import calibration_images
    from resnets.weights import load_classifier

    torch.set_num_threads(threads)
    clf = load_classifier(weights, name)
    pre = clf.preprocessing
    size = (3, pre.input_size, pre.input_size)
    images = calibration_images(SHARED / "train", calib, size[1:], mean=pre.mean, std=pre.std)
    backends = {
        "fp32": load_backend("torch", clf.model, input_size=size),
        "bf16": load_backend("bf16", clf.model, input_size=size),
        "int8": load_backend("onnxruntime-int8", clf.model, input_size=size, threads=threads,
                             calibration=images),
    }
    if HAS_OPENVINO:
        backends["openvino-int8"] = load_backend("openvino-int8", clf.model, input_size=size,
                                                 threads=threads, calibration=images)
    index = scan_folder(SHARED / "test")
    correct = dict.fromkeys(backends, 0)
    for start in range(0, len(index.paths), 1000):
        x = pre(torch.stack([read_rgb(p) for p in index.paths[start:start + 1000]]))
        labels = torch.tensor(index.labels[start:start + 1000])
        for kind, run in backends.items():
            correct[kind] += int((run(x).argmax(1) == labels).sum())
    top1 = {k: 100.0 * v / len(index.paths) for k, v in correct.items()}
    return {"model": name, "weights": clf.source, "images": len(index.paths),
            "calibration_images": calib, "top1": top1,
            "int8_minus_fp32": top1["int8"] - top1["fp32"],
            "openvino_int8_minus_fp32": (top1["openvino-int8"] - top1["fp32"]
                                         if HAS_OPENVINO else None),
            "bf16_minus_fp32": top1["bf16"] - top1["fp32"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,resnet20,resnet56")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="seconds per case in each repeat")
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--accuracy", action="store_true",
                        help="also fp32/bf16/int8 top-1 of the CIFAR models on the test set")
    parser.add_argument("--weights", action="append", default=[], metavar="MODEL=FILE",
                        help="weights for --accuracy (default: the bundled ones)")
    parser.add_argument("--out", help="write every report as one JSON file")
    parser.add_argument("--smoke", action="store_true",
                        help="resnet20 at batch 8, 1 repeat: checks the script, times nothing")
    args = parser.parse_args()

    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    if not HAS_OPENVINO:
        log("openvino/nncf not installed: OpenVINO backends and peers are left out "
            "(pip install 'resnets[openvino]')")
    names = args.models.split(",")
    overrides = {"threads": args.threads, "repeats": args.repeats, "min_time_s": args.min_time,
                 "calib_images": args.calib_images, "calib_dir": str(SHARED / "train")}
    if args.smoke:
        names = ["resnet20"]
        overrides.update(repeats=1, min_time_s=0.0, warmup=1, calib_images=16)
    out: dict = {"reports": [], "accuracy": []}
    summary: list[str] = []
    for name in names:
        cfg = RUNS[name]
        fields = {**cfg.__dict__, **overrides}
        if args.smoke:
            fields["batches"] = (8,)
        report = run_bench(BenchConfig(**fields), log=log)
        print_report(report)
        summary += summarize(report)
        out["reports"].append(report)
    weights = dict(w.split("=", 1) for w in args.weights)
    if args.accuracy:
        for name in [n for n in names if n != "resnet50"]:
            acc = cifar_accuracy(name, weights.get(name), args.threads, args.calib_images)
            summary.append(f"{name} top-1 on CIFAR-10 test: " + ", ".join(
                f"{k} {v:.2f}%" for k, v in acc["top1"].items())
                + f" (int8 - fp32 {acc['int8_minus_fp32']:+.2f} points"
                + ("" if acc["openvino_int8_minus_fp32"] is None else
                   f", openvino-int8 - fp32 {acc['openvino_int8_minus_fp32']:+.2f}") + ")")
            out["accuracy"].append(acc)
    print("\n".join(summary))
    if args.out:
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1))
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
