"""Same-seed A/B: does the fast resnets input pipeline change accuracy?

Trains the same ResNet twice from the same initial weights, with the same optimizer, lr
schedule and the same sample order (step for step), and changes only the pipeline:

* reference: torchvision ``ImageFolder`` decoding JPEGs, per-image RandomCrop(32, pad 4) /
  RandomHorizontalFlip / ToTensor / Normalize in a ``DataLoader``, eager fp32;
* resnets: the uint8 in-memory cache with whole-batch crop/flip on the device
  (``MemoryBatches``), channels_last and bf16 autocast, as ``resnets train`` runs;
* resnets-fp32 (with ``--pipelines reference,resnets,resnets-fp32``): the same without bf16,
  to tell the data path's effect from the precision's.

Both are then evaluated the same way (fp32, single view) on the full test split. What is
left to differ is the random draw of crops and flips, and the arithmetic precision.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ab_pipeline_accuracy.py \
        --data ../shared/data/cifar10 --epochs 3 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _cifar_reference import reference_dataset, train_step

from resnets import create_model
from resnets.data.augment import CIFAR_MEAN, CIFAR_STD
from resnets.data.folder import load_folder
from resnets.train.data import MemoryBatches
from resnets.train.loop import evaluate_batches


def train_once(pipeline: str, seed: int, args, train_mem: MemoryBatches, ref_ds) -> tuple:
    torch.manual_seed(seed)
    model = create_model(args.model)
    fast = pipeline.startswith("resnets")  # the in-memory cache with batched augmentation
    bf16 = pipeline == "resnets"            # "resnets-fp32": the same data, fp32 arithmetic
    if fast:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    steps = len(train_mem)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr,
                                                total_steps=args.epochs * steps)
    aug = torch.Generator().manual_seed(seed + 7)
    torch.manual_seed(seed + 11)  # the reference's per-image transforms draw from here
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        if fast:
            batches = train_mem.batches(seed, epoch, generator=aug)
        else:  # the very same sample order, batch for batch
            order = train_mem.order(seed, epoch)[: steps * args.batch].tolist()
            sampler = [order[i:i + args.batch] for i in range(0, len(order), args.batch)]
            batches = torch.utils.data.DataLoader(ref_ds, batch_sampler=sampler,
                                                  num_workers=args.workers)
        for x, y, *_ in batches:
            loss = train_step(model, opt, x, y, bf16=bf16, channels_last=fast)
            sched.step()
        print(f"  {pipeline} seed {seed} epoch {epoch + 1}/{args.epochs}: "
              f"last loss {loss.item():.3f}, {time.perf_counter() - start:.0f} s", flush=True)
    return model.to(memory_format=torch.contiguous_format), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/cifar10")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--pipelines", default="reference,resnets",
                    help="also resnets-fp32: the resnets data path without bf16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json-out", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    train_data = load_folder(root / "train")
    test_data = load_folder(root / "test", classes=train_data.classes)
    ref_ds = reference_dataset(root / "train")
    if ref_ds.classes != train_data.classes or \
            ref_ds.targets != train_data.labels.tolist():
        raise SystemExit("ImageFolder and the resnets cache disagree on the sample order")
    cpu = torch.device("cpu")
    train_mem = MemoryBatches(train_data, args.batch, cpu, CIFAR_MEAN, CIFAR_STD, True)
    test_mem = MemoryBatches(test_data, 500, cpu, CIFAR_MEAN, CIFAR_STD, False)

    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        accs = {}
        for pipeline in args.pipelines.split(","):
            model, wall = train_once(pipeline, seed, args, train_mem, ref_ds)
            acc = evaluate_batches(model, test_mem.batches(0, 0), cpu, None).top1
            accs[pipeline] = (acc, wall)
        diff = accs["resnets"][0] - accs["reference"][0]
        rows.append({"seed": seed, "diff": diff,
                     **{f"{k}_acc": v[0] for k, v in accs.items()},
                     **{f"{k}_s": v[1] for k, v in accs.items()}})
        print(f"seed {seed}: reference {accs['reference'][0]:.2f}%  resnets "
              f"{accs['resnets'][0]:.2f}%  diff {diff:+.2f} points  "
              f"(train wall {accs['reference'][1]:.0f} s vs {accs['resnets'][1]:.0f} s)"
              + "".join(f"; {k} {v[0]:.2f}%" for k, v in accs.items()
                        if k not in ("reference", "resnets")), flush=True)
    mean = sum(r["diff"] for r in rows) / len(rows)
    print(f"{args.model}, {args.epochs} epochs, {len(rows)} seed(s): mean diff "
          f"{mean:+.2f} points (resnets - reference); within 0.3: {abs(mean) <= 0.3}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "runs": rows,
                                                   "mean_diff": mean}, indent=2))


if __name__ == "__main__":
    main()
