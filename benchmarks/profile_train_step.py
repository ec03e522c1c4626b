"""Where a ResNet-20 training step spends its time on this CPU, grouped by kind of op.

Explains the ceiling on the training-throughput ratio (issue #3): the step as
``bench_train_throughput.py`` times it (bf16 autocast + channels_last, batch 128, SGD),
run under ``torch.profiler`` on a synthetic batch (no data loading), self CPU time summed
into convolutions, batch norm, element-wise ops (ReLU, residual adds, their backward),
optimizer and the rest. Run on a quiet machine:

    .venv/bin/python benchmarks/profile_train_step.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _cifar_reference import train_step
from torch.profiler import ProfilerActivity, profile

from resnets import create_model

GROUPS = {  # first matching substring wins
    "classifier head (linear)": ("addmm", "aten::mm"),
    "convolution (forward + backward)": ("convolution",),
    "batch norm (forward + backward)": ("batch_norm",),
    "element-wise (ReLU, residual add, their backward)": ("threshold", "relu", "clamp",
                                                           "add"),
    "optimizer (SGD step, zero_grad)": ("Optimizer", "_foreach", "mul_", "lerp"),
}


def group_of(name: str) -> str:
    for group, keys in GROUPS.items():
        if any(k in name for k in keys):
            return group
    return "other (copies, loss, linear, autograd bookkeeping)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fp32", action="store_true", help="eager fp32, NCHW (the reference)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bf16 = not args.fp32
    torch.manual_seed(0)
    model = create_model(args.model)
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    model.train()
    for _ in range(5):  # warm-up: oneDNN picks its kernels
        train_step(model, opt, x, y, bf16, bf16)
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, opt, x, y, bf16, bf16)
    rate = args.steps * args.batch / (time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            train_step(model, opt, x, y, bf16, bf16)
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        group = group_of(event.key)
        totals[group] = totals.get(group, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values())
    setting = "fp32, NCHW" if args.fp32 else "bf16 autocast, channels_last"
    print(f"{args.model}, batch {args.batch}, {setting}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}: {rate:.0f} images/s without profiling")
    print(f"{'kind of op':55s} share of self CPU time")
    shares = {g: 100 * t / whole for g, t in sorted(totals.items(), key=lambda kv: -kv[1])}
    for group, share in shares.items():
        print(f"{group:55s} {share:5.1f}%")
    print(json.dumps({"images_per_s": rate, "share_percent": shares}))


if __name__ == "__main__":
    main()
