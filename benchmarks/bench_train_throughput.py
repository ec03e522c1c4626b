"""Training throughput, end to end (data + step): resnets vs the usual CIFAR pipeline.

Reference (what most CIFAR repositories do): torchvision ``ImageFolder`` with per-image
RandomCrop(32, padding=4) / RandomHorizontalFlip / ToTensor / Normalize through a
``DataLoader``, eager fp32, at its best ``num_workers``. resnets: the uint8 in-memory cache
with batched augmentation (``MemoryBatches``), channels_last, bf16 autocast.

Same model (ResNet-20 unless ``--model``), batch size, optimizer and machine; repeats are
interleaved and the medians compared. Run on a quiet machine (no training in the background):

    .venv/bin/python benchmarks/bench_train_throughput.py --data ../shared/data/cifar10

On a GPU (``--device cuda``) the reference's batches come from pinned memory with
non-blocking copies, ours live on the GPU, and each timed stretch ends with a
synchronize, so the images/s are of finished steps.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from _cifar_reference import reference_dataset, train_step

from resnets import create_model
from resnets.data.augment import CIFAR_MEAN, CIFAR_STD
from resnets.data.folder import load_folder
from resnets.train.data import MemoryBatches


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)


def reference_loader(root: Path, batch: int, workers: int, device: torch.device):
    return torch.utils.data.DataLoader(reference_dataset(root), batch_size=batch, shuffle=True,
                                       num_workers=workers, drop_last=True,
                                       persistent_workers=workers > 0,
                                       pin_memory=device.type == "cuda")


def time_steps(batches, model, opt, steps: int, amp: bool, channels_last: bool,
               device: torch.device) -> float:
    """Images per second over ``steps`` training steps (data loading included)."""
    model.train()
    it = iter(batches)
    n = 0
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        x, y = next(it)[:2]
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        train_step(model, opt, x, y, amp, channels_last)
        n += len(y)
    _sync(device)
    return n / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Cycle:
    """Endless iteration over a DataLoader or MemoryBatches epochs."""

    def __init__(self, make):
        self.make = make

    def __iter__(self):
        epoch = 0
        while True:
            yield from self.make(epoch)
            epoch += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/cifar10")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--compile", action="store_true",
                    help="also time bf16 + channels_last under torch.compile")
    ap.add_argument("--compile-modes", default="default",
                    help="with --compile: torch.compile modes, comma-separated "
                         "(default, reduce-overhead, max-autotune-no-cudagraphs, ...)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
    root = Path(args.data) / "train"

    t0 = time.perf_counter()
    data = load_folder(root)
    cache_s = time.perf_counter() - t0
    mem = MemoryBatches(data, args.batch, device, CIFAR_MEAN, CIFAR_STD, True)
    gen = torch.Generator().manual_seed(0)

    def ours(epoch):
        return mem.batches(0, epoch, generator=gen)

    configs = {}
    for w in [int(v) for v in args.workers.split(",")]:
        loader = reference_loader(root, args.batch, w, device)
        configs[f"reference fp32 (workers={w})"] = (_Cycle(lambda e, ld=loader: ld), False, False)
    configs["resnets in-memory fp32"] = (_Cycle(ours), False, False)
    configs["resnets in-memory bf16 + channels_last"] = (_Cycle(ours), True, True)
    compile_modes = {}
    if args.compile:
        for mode in args.compile_modes.split(","):
            name = f"resnets in-memory bf16 + channels_last + compile ({mode})"
            configs[name] = (_Cycle(ours), True, True)
            compile_modes[name] = None if mode == "default" else mode

    models = {}
    for name, (_, _, cl) in configs.items():
        torch.manual_seed(0)
        m = create_model(args.model).to(device)
        models[name] = (m.to(memory_format=torch.channels_last) if cl else m, None)
        models[name] = (models[name][0], sgd(models[name][0]))
        if name in compile_modes:  # the optimizer keeps the eager module's parameters
            models[name] = (torch.compile(models[name][0], mode=compile_modes[name]),
                            models[name][1])
    iters = {name: iter(c[0]) for name, c in configs.items()}
    for name, (_, amp, cl) in configs.items():  # warm-up (workers start, kernels pick)
        time_steps(_Iter(iters[name]), *models[name], 5, amp, cl, device)
    results: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, (_, amp, cl) in configs.items():
            results[name].append(time_steps(_Iter(iters[name]), *models[name], args.steps,
                                            amp, cl, device))
    med = {name: statistics.median(v) for name, v in results.items()}
    ref_best = max((v, k) for k, v in med.items() if k.startswith("reference"))
    card = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}{card}; "
          f"{args.model}, batch {args.batch}")
    print(f"one-time uint8 cache load/decode: {cache_s:.1f} s for {len(data)} images")
    print(f"{'pipeline':45s} {'img/s min/median/max':>24s}  ratio vs best reference")
    for name, v in results.items():
        print(f"{name:45s} {min(v):7.0f} {med[name]:7.0f} {max(v):7.0f}   "
              f"{med[name] / ref_best[0]:.2f}x")
    print(json.dumps({"median_images_per_s": med, "best_reference": ref_best[1],
                      "model": args.model, "device": args.device, "batch": args.batch,
                      "steps": args.steps, "repeats": args.repeats}))


class _Iter:
    """Adapter so time_steps can call iter() on a shared generator without restarting it."""

    def __init__(self, it):
        self.it = it

    def __iter__(self):
        return self.it


if __name__ == "__main__":
    main()
