"""Ship a finished training run's weights inside the package, with their provenance.

    .venv/bin/python scripts/bundle_weights.py runs/bundle-resnet20 \
        --command "resnets train --model resnet20 ..."

Copies ``RUN/model.safetensors`` (absolute paths in its metadata cut to run names) to
``src/resnets/weights/bundled/<model>_cifar10.safetensors``,
measures top-1 on the full test split and on the fixed 2,000-image subset (the first 200
images of each class, the subset the tests recompute), writes
``bundled/provenance/<model>_cifar10.json`` and adds the weight record.

A run that started from earlier weights (``--pretrained``, a teacher) lists the runs before
it with ``--earlier FILE``: a JSON list of ``{"run", "command", "epochs", "test_acc", ...}``
objects, oldest first, kept in the provenance as ``earlier_stages``; ``total_epochs`` then
counts every stage's epochs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from resnets.models.stats import count_params
from resnets.tasks.classify import evaluate_folder
from resnets.weights import load_classifier
from resnets.weights.provenance import copy_without_machine_paths, strip_machine_paths
from resnets.weights.records import BUNDLED_DIR, add_bundled_records, bundled_record

SUBSET_PER_CLASS = 200


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--command", required=True, help="the command that trained the run")
    ap.add_argument("--test", default="../shared/data/cifar10/test")
    ap.add_argument("--earlier", type=Path, help="JSON list of the stages before this run")
    args = ap.parse_args()
    earlier = json.loads(args.earlier.read_text()) if args.earlier else []
    if not isinstance(earlier, list) or not all("epochs" in e and "command" in e
                                                 for e in earlier):
        raise SystemExit(f"{args.earlier}: expected a JSON list of objects with 'epochs' and "
                         "'command'")
    run = Path(args.run)
    meta_cfg = json.loads((run / "config.json").read_text())
    result = json.loads((run / "result.json").read_text())
    model = meta_cfg["model"]
    dest = BUNDLED_DIR / f"{model}_cifar10.safetensors"
    copy_without_machine_paths(run / "model.safetensors", dest)  # runs, not paths
    clf = load_classifier(dest, model)
    full = evaluate_folder(clf, args.test)
    flip = evaluate_folder(clf, args.test, tta=True)
    subset = evaluate_folder(clf, args.test, limit_per_class=SUBSET_PER_CLASS)
    has_val = meta_cfg["val_fraction"] > 0
    split = (f"{meta_cfg['val_fraction']:.0%} of train held out for validation" if has_val
             else "all 50,000 training images, no validation split: the checkpoint is "
             f"selected on training loss (epoch {result.get('best_epoch')} of "
             f"{meta_cfg['epochs']})")
    record = {
        "model": model, "file": dest.name,
        "sha256": hashlib.sha256(dest.read_bytes()).hexdigest(),
        "parameters": count_params(clf.model),
        "dataset": f"cifar-10 (../shared/data/cifar10, JPEG copy; {split})",
        "recipe": meta_cfg, "epochs": meta_cfg["epochs"], "seed": meta_cfg["seed"],
        "total_epochs": meta_cfg["epochs"] + sum(e["epochs"] for e in earlier),
        "best_epoch": result.get("best_epoch"),
        "val_acc": result.get("best_val_acc") if has_val else None,
        "test_acc": full.top1, "test_top5": full.top5, "test_n": full.n,
        "test_acc_flip_tta": flip.top1,
        "test_subset_acc": subset.top1, "test_subset_n": subset.n,
        "test_subset": f"first {SUBSET_PER_CLASS} images (sorted names) of each test class",
        "command": args.command,
    }
    if earlier:
        record["earlier_stages"] = earlier
    prov = BUNDLED_DIR / "provenance" / f"{model}_cifar10.json"
    prov.parent.mkdir(exist_ok=True)
    prov.write_text(json.dumps(strip_machine_paths(record), indent=1) + "\n")
    add_bundled_records(bundled_record(dest, tag=f"{model}.resnets_cifar10", top1=full.top1,
                                       top5=full.top5,
                                       accuracy_source=f"measured: {prov.name}"))
    print(json.dumps({k: v for k, v in record.items() if k != "recipe"}, indent=1))


if __name__ == "__main__":
    main()
