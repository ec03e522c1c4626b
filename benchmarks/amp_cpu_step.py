"""One training step in fp32 and under bf16 autocast, on one CPU thread: whether ``--amp
auto`` should autocast on this CPU (see ``resnets.devices.cpu_has_native_bf16``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/amp_cpu_step.py [--repeats 3]

Prints steps/s (edsr_baseline: batch 16 of 48-px LR patches at x2, L1, Adam) and
images/s (CIFAR ResNet-56: batch 128, SGD), both channels-last, and the fp32/bf16 ratio.
Synthetic inputs: the arithmetic, not the data pipeline, is what differs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from resnets.devices import cpu_has_native_bf16
from resnets.models.registry import build_model
from resnets.models.sr import create_sr_model


def seconds_per_step(step, repeats: int) -> float:
    step()  # warm-up: first-call allocations and kernel choice
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sr_step(amp: bool):
    model = create_sr_model("edsr_baseline").to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    lr = torch.rand(16, 3, 48, 48).to(memory_format=torch.channels_last)
    hr = torch.rand(16, 3, 96, 96)

    def step():
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            loss = (model(lr, 2).float() - hr).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def cifar_step(amp: bool):
    model = build_model("resnet56").to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    x = torch.rand(128, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))

    def step():
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: "
          f"{cpu_has_native_bf16()}, torch {torch.__version__}")
    for name, make, unit, per_step in (("edsr_baseline x2", sr_step, "steps/s", 1),
                                       ("CIFAR ResNet-56", cifar_step, "images/s", 128)):
        fp32, bf16 = (per_step / seconds_per_step(make(amp), args.repeats)
                      for amp in (False, True))
        print(f"{name}: fp32 {fp32:.3f} {unit}, bf16 autocast {bf16:.3f} {unit}, "
              f"fp32/bf16 {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
