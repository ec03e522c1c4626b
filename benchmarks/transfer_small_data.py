"""Fine-tuning on a small dataset: pretrained backbone vs training from scratch.

Pretrain a ResNet on CIFAR-10 classes 0-4 (all 25,000 training images), then train on
classes 5-9 with only ``--per-class`` training images per class, either starting from the
pretrained backbone (new head, lower backbone learning rate) or from scratch; same
epochs, same seeds. Test accuracy on the 5,000 test images of classes 5-9.

The class subsets are folders of symbolic links under ``--out`` (nothing is copied).

    .venv/bin/python benchmarks/transfer_small_data.py --data ../shared/data/cifar10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
from pathlib import Path

from resnets.train import recipe, train


def link_view(src: Path, dst: Path, classes: list[str], per_class: int | None, seed: int
              ) -> Path:
    """``dst/<class>`` holding (links to) the images of ``classes`` under ``src``."""
    rng = random.Random(seed)
    for c in classes:
        target = dst / c
        if target.exists():
            continue
        if per_class is None:
            dst.mkdir(parents=True, exist_ok=True)
            os.symlink((src / c).resolve(), target, target_is_directory=True)
            continue
        files = sorted((src / c).iterdir())
        target.mkdir(parents=True)
        for f in sorted(rng.sample(files, per_class)):
            os.symlink(f.resolve(), target / f.name)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/cifar10")
    ap.add_argument("--out", default="runs/transfer")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--pretrain-epochs", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--finetune-lr", type=float, default=0.05)
    ap.add_argument("--backbone-lr-scale", type=float, default=0.2)
    ap.add_argument("--batch-size", type=int, default=64, help="for the small-data runs")
    ap.add_argument("--pretrain-batch-size", type=int, default=128)
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    classes = sorted(d.name for d in (data / "train").iterdir() if d.is_dir())
    source, target = classes[:5], classes[5:]

    pre_view = out / "views" / "pretrain"
    link_view(data / "train", pre_view / "train", source, None, 0)
    link_view(data / "test", pre_view / "test", source, None, 0)
    pre_run = out / f"pretrain-{args.model}"
    if not (pre_run / "model.safetensors").exists():
        train(recipe("fast", model=args.model, data=str(pre_view), out=str(pre_run),
                     epochs=args.pretrain_epochs, batch_size=args.pretrain_batch_size, seed=0),
              resume=(pre_run / "last.pt").exists())
    pre_result = json.loads((pre_run / "result.json").read_text())

    small = out / "views" / f"target-{args.per_class}"
    link_view(data / "train", small / "train", target, args.per_class, 0)
    link_view(data / "test", small / "test", target, None, 0)
    results: dict[str, list[float]] = {"pretrained": [], "scratch": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in ("pretrained", "scratch"):
            run = out / f"{arm}-seed{seed}"
            if not (run / "result.json").exists():
                common = {"model": args.model, "data": str(small), "out": str(run),
                          "epochs": args.epochs, "seed": seed, "batch_size": args.batch_size,
                          "ema_decay": 0.0}
                if arm == "pretrained":
                    cfg = recipe("fast", pretrained=str(pre_run / "model.safetensors"),
                                 lr=args.finetune_lr, backbone_lr_scale=args.backbone_lr_scale,
                                 **common)
                else:
                    cfg = recipe("fast", **common)
                train(cfg, resume=(run / "last.pt").exists(), quiet=True)
            results[arm].append(json.loads((run / "result.json").read_text())["test_acc"])
            print(f"{arm:10s} seed {seed}: test top-1 {results[arm][-1]:.2f}%")
    summary = {
        "setting": vars(args), "source_classes": source, "target_classes": target,
        "pretrain_test_acc_on_source": pre_result.get("test_acc"),
        "test_acc": results,
        "mean": {k: statistics.fmean(v) for k, v in results.items()},
        "stdev": {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in results.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for arm in ("pretrained", "scratch"):
        print(f"{arm:10s} mean {summary['mean'][arm]:.2f}% (sd {summary['stdev'][arm]:.2f}) "
              f"over {len(results[arm])} seeds")


if __name__ == "__main__":
    main()
