"""Fine-tuning on a small dataset: pretrained backbone vs training from scratch.

Pretrain a ResNet on CIFAR-10 classes 0-4 (all 25,000 training images), then train on
classes 5-9 with only ``--per-class`` training images per class, either starting from the
pretrained backbone (new head, lower backbone learning rate) or from scratch; same
epochs, same seeds. Test accuracy on the 5,000 test images of classes 5-9.

The class subsets are folders of symbolic links under ``--out`` (nothing is copied).

    .venv/bin/python benchmarks/transfer_small_data.py --data ../shared/data/cifar10

``--photos`` is the setting of issue #15: an ImageNet architecture at ``--image-size`` (the
CIFAR images upsampled), and the small training set written as a photo folder of mixed
sizes (48-128 px a side, any aspect), formats and modes (JPEG, PNG with alpha, grayscale
PNG); the pretrained arm uses the ``finetune`` recipe, the scratch arm the same recipe
without pretrained weights (which runs it at its from-scratch lr):

    .venv/bin/python benchmarks/transfer_small_data.py --photos --model resnet18 \
        --image-size 64 --out runs/transfer-photos

``--grid HEAD_LR:BACKBONE_SCALE,...`` (with ``--photos``) runs the pretrained arm at each
learning-rate pair instead, on ``--seeds``, and prints validation and test top-1: the sweep
behind the recipe's rates. ``--scratch-grid LR,...`` does the same for the scratch arm.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from resnets.train import recipe, train


def photo_view(src: Path, dst: Path, classes: list[str], per_class: int, seed: int) -> Path:
    """``dst/<class>`` holding ``per_class`` images of each class as photos of mixed sizes,
    formats and modes (bicubic upsampling of the 32 px originals)."""
    rng = random.Random(seed)
    for c in classes:
        target = dst / c
        if target.exists():
            continue
        target.mkdir(parents=True)
        for i, f in enumerate(sorted(rng.sample(sorted((src / c).iterdir()), per_class))):
            w, h = rng.randint(48, 128), rng.randint(48, 128)
            img = Image.open(f).convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
            kind = i % 4
            if kind == 1:  # PNG with an (opaque) alpha channel
                img.putalpha(Image.fromarray(np.full((h, w), 255, np.uint8)))
                img.save(target / f"{f.stem}.png")
            elif kind == 3 and i % 8 == 3:  # some grayscale
                img.convert("L").save(target / f"{f.stem}.png")
            else:
                img.save(target / f"{f.stem}.jpg", quality=90)
    return dst


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
    ap.add_argument("--photos", action="store_true",
                    help="small set as a mixed photo folder, finetune recipe (issue #15)")
    ap.add_argument("--grid", default="", help="HEAD_LR:BACKBONE_SCALE,... (with --photos)")
    ap.add_argument("--scratch-grid", default="", help="LR,... (with --photos)")
    ap.add_argument("--image-size", type=int, default=None)
    args = ap.parse_args()
    sized = {"image_size": args.image_size} if args.image_size else {}
    data, out = Path(args.data), Path(args.out)
    classes = sorted(d.name for d in (data / "train").iterdir() if d.is_dir())
    source, target = classes[:5], classes[5:]

    pre_view = out / "views" / "pretrain"
    link_view(data / "train", pre_view / "train", source, None, 0)
    link_view(data / "test", pre_view / "test", source, None, 0)
    pre_run = out / f"pretrain-{args.model}"
    if not (pre_run / "model.safetensors").exists():
        train(recipe("fast", model=args.model, data=str(pre_view), out=str(pre_run),
                     epochs=args.pretrain_epochs, batch_size=args.pretrain_batch_size, seed=0,
                     crop_min_area=0.25, **sized),
              resume=(pre_run / "last.pt").exists())
    pre_result = json.loads((pre_run / "result.json").read_text())

    small = out / "views" / f"target-{args.per_class}{'-photos' if args.photos else ''}"
    if args.photos:
        photo_view(data / "train", small / "train", target, args.per_class, 0)
    else:
        link_view(data / "train", small / "train", target, args.per_class, 0)
    link_view(data / "test", small / "test", target, None, 0)
    if args.grid or args.scratch_grid:
        sweep(args, small, pre_run / "model.safetensors", sized)
        return
    results: dict[str, list[float]] = {"pretrained": [], "scratch": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in ("pretrained", "scratch"):
            run = out / f"{arm}-seed{seed}"
            if not (run / "result.json").exists():
                common = {"model": args.model, "data": str(small), "out": str(run),
                          "epochs": args.epochs, "seed": seed, "batch_size": args.batch_size,
                          **sized}
                if args.photos:
                    weights = str(pre_run / "model.safetensors") if arm == "pretrained" else None
                    cfg = recipe("finetune", pretrained=weights, **common)
                elif arm == "pretrained":
                    cfg = recipe("fast", pretrained=str(pre_run / "model.safetensors"),
                                 lr=args.finetune_lr, backbone_lr_scale=args.backbone_lr_scale,
                                 ema_decay=0.0, **common)
                else:
                    cfg = recipe("fast", ema_decay=0.0, **common)
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


def sweep(args: argparse.Namespace, small: Path, weights: Path, sized: dict) -> None:
    """The ``finetune`` recipe at other learning rates: pretrained (``--grid``) and from
    scratch (``--scratch-grid``), one run per setting and seed, validation and test top-1."""
    points = [("pretrained", float(h), float(b)) for h, b in
              (p.split(":") for p in args.grid.split(",") if p)]
    points += [("scratch", float(lr), 1.0) for lr in args.scratch_grid.split(",") if lr]
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm, lr, scale in points:
            run = Path(args.out) / "grid" / f"{arm}-lr{lr:g}-bb{scale:g}-seed{seed}"
            if not (run / "result.json").exists():
                start = {"pretrained": str(weights)} if arm == "pretrained" else {}
                cfg = recipe("finetune", model=args.model, data=str(small), out=str(run),
                             epochs=args.epochs, seed=seed, batch_size=args.batch_size,
                             lr=lr, backbone_lr_scale=scale, **start, **sized)
                train(cfg, resume=(run / "last.pt").exists(), quiet=True)
            r = json.loads((run / "result.json").read_text())
            rows.append({"arm": arm, "lr": lr, "backbone_lr_scale": scale, "seed": seed,
                         "val_acc": r["best_val_acc"], "test_acc": r["test_acc"]})
            print(f"{arm:10s} lr {lr:<6g} backbone x{scale:<5g} seed {seed}: "
                  f"val {r['best_val_acc']:.1f}%  test {r['test_acc']:.2f}%", flush=True)
    (Path(args.out) / "grid" / "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
