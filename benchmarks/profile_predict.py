"""Where `resnets predict`'s time goes, stage by stage (issue 17, item 2).

Times, in one process on the first ``--limit`` images of a folder (sorted, spread over the
class folders), each stage alone: listing the files, loading the classifier, loading the
backend (conversion or cache read, compile), decoding, the resize/crop, normalising in
PyTorch (which predict leaves to the backend), the network alone on preloaded uint8
batches, the decode pipeline alone (threads, no network), the child process that decodes
while ``resnets predict`` starts (:class:`resnets.data.prefetch.Prefetch`: forked here after
torch, so it shows the child's speed, not the start-up it overlaps) and the pipeline taking
its pixels, the whole ``predict_with`` and rendering the JSON lines. Also, as subprocesses:
the interpreter with ``import resnets.cli`` and a ``resnets predict`` of one image (startup,
model and backend load).
Run on a quiet machine:

    .venv/bin/python benchmarks/profile_predict.py --limit 2000 --backend auto
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10" / "test"


def timed(fn: Callable[[], object], repeats: int = 1) -> tuple[float, object]:
    """(best seconds of ``repeats`` calls, the last result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def subprocess_seconds(cmd: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="decode threads (None: default)")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many per stage")
    ap.add_argument("--no-subprocess", action="store_true", help="skip the startup timings")
    args = ap.parse_args()

    from resnets.data.image_file import collect_images
    from resnets.data.io import read_rgb
    from resnets.data.prefetch import Prefetch
    from resnets.data.stream import image_batches
    from resnets.tasks.classify import classifier_backend, predict_with
    from resnets.weights.classifier import load_classifier

    rows: dict[str, float] = {}
    t, paths = timed(lambda: collect_images([args.data]), args.repeats)
    rows["list files (all)"] = t
    per_class: dict[str, list[Path]] = {}
    for p in paths:
        per_class.setdefault(p.parent.name, []).append(p)
    share = max(1, args.limit // max(1, len(per_class)))
    paths = [p for group in per_class.values() for p in group[:share]]
    n = len(paths)

    t, clf = timed(lambda: load_classifier(None, None), args.repeats)
    rows["load classifier"] = t
    pre = clf.preprocessing

    # Before any backend runs: OpenVINO's callback threads count as Python threads, and
    # Prefetch forks only where no other Python thread runs.
    def child_through(prefetched: Prefetch) -> int:
        return sum(prefetched.take(i, pre.resize) is not None for i in range(n))

    def child_alone() -> int:
        with Prefetch(paths) as prefetched:
            return child_through(prefetched)

    t, taken = timed(child_alone, 1)
    rows[f"prefetch child: {taken} files (fork to exit)"] = t
    with Prefetch(paths) as prefetched:
        child_through(prefetched)  # wait for it
        t, _ = timed(lambda: list(image_batches(paths, pre, args.batch_size, args.workers,
                                                prefetched=prefetched)), 1)
        rows["decode pipeline, pixels from the child"] = t

    t, run = timed(lambda: classifier_backend(clf, args.backend, paths), 1)
    rows[f"load backend {args.backend}"] = t

    t, images = timed(lambda: [read_rgb(p, min_side=pre.resize) for p in paths], args.repeats)
    rows["decode (1 thread)"] = t
    t, cropped = timed(lambda: [pre.resize_crop(x) for x in images], args.repeats)
    rows["resize_crop per image"] = t
    batches = [torch.stack(cropped[i:i + args.batch_size])
               for i in range(0, n, args.batch_size)]
    t, _ = timed(lambda: [pre.normalize(b) for b in batches], args.repeats)
    rows["normalize in torch (not in predict)"] = t
    t, _ = timed(lambda: list(run.map(batches)), args.repeats)
    rows[f"network alone, batch {args.batch_size} (Backend.map)"] = t
    t, _ = timed(lambda: [run(x) for x in batches], args.repeats)
    rows[f"network alone, batch {args.batch_size}, one call at a time"] = t
    big = [torch.cat(batches[i:i + 4]) for i in range(0, len(batches), 4)]
    t, _ = timed(lambda: list(run.map(big)), args.repeats)
    rows[f"network alone, batch {4 * args.batch_size} (Backend.map)"] = t
    t, _ = timed(lambda: list(image_batches(paths, pre, args.batch_size, args.workers)),
                 args.repeats)
    rows["decode pipeline (threads, no network)"] = t

    t, (preds, _) = timed(lambda: predict_with(clf, paths, top_k=1, batch_size=args.batch_size,
                                               backend=args.backend, workers=args.workers), 1)
    rows["predict_with (incl. backend load)"] = t

    def render() -> int:
        return len("\n".join(json.dumps({"path": p.path, "top": [
            {"class": c, "probability": v} for c, v in p.top]}) for p in preds))
    t, _ = timed(render, args.repeats)
    rows["JSON lines"] = t

    if not args.no_subprocess:
        rows["python -c 'import resnets.cli'"] = subprocess_seconds(
            [sys.executable, "-c", "import resnets.cli"], args.repeats)
        cmd = [sys.executable, "-m", "resnets", "predict", str(paths[0]), "--json", "--top-k",
               "1"]
        if args.backend != "auto":
            cmd += ["--backend", args.backend]
        rows["resnets predict, 1 image"] = subprocess_seconds(cmd, args.repeats)

    print(f"{n} images, backend {args.backend}, torch threads {torch.get_num_threads()}")
    for name, seconds in rows.items():
        print(f"{name:<42}{seconds:>8.3f} s{1e6 * seconds / n:>10.0f} us/image")


if __name__ == "__main__":
    main()
