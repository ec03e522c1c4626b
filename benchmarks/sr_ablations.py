"""Super-resolution training choices, one at a time: a small network, a short fixed budget each.

Every variant is the reference recipe (edsr_small, L1, flips + 90-degree turns, cosine lr,
patches of 96 px in batches of 16, one network for x2/x3/x4, bf16 autocast) with one choice
changed, trained for the same number of steps (``--steps``) as a normal ``train-sr`` run in
its own folder under ``--out``. Variants run one after another; a finished one
(``result.json``) is skipped and an interrupted one resumes from its ``last.pt``, so the
script can be stopped and run again. Every variant holds out the same validation images.

Two variants ask whether one body shared by three scales helps x2: ``x2-only-third`` trains
x2 alone for a third of the steps (the x2 updates the multi-scale reference makes, since its
batches cycle x2, x3, x4) and ``x2-only-full`` for all of them. ``seed-1`` is the reference
with another seed: the run-to-run noise the other deltas are read against.

Judged on the held-out validation images (the best-val checkpoint of each run); Set5 and
Set14 are reported beside them and, with ``--epoch-report``, scored every epoch for the
curves, never used to choose. Self-ensemble (x8 geometric) is an evaluation-time choice of
``sr-eval``, not a training variant: it is not part of this table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sr_ablations.py \\
        --data ../shared/data/sr --out runs/sr-ablations --steps 3000 --plot

writes ``OUT/summary.json``, ``OUT/summary.md`` (PSNR and deltas vs the reference, wall time,
steps/s) and, with ``--plot``, ``OUT/curves.png`` (validation PSNR against steps).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from resnets.data.sr import holdout, list_sr_images
from resnets.files import atomic_write
from resnets.train.sr import (
    RESUME_CHANGEABLE,
    SRTrainConfig,
    SRTrainer,
    train_sr,
    validation_scores,
)

REFERENCE = "reference"


@dataclass(frozen=True)
class Variant:
    """One training choice changed from the reference: config ``changes`` and the share of
    the ``--steps`` budget it trains for."""

    changes: dict = field(default_factory=dict)
    budget: float = 1.0
    note: str = ""


VARIANTS: dict[str, Variant] = {
    REFERENCE: Variant(note="L1, dihedral, cosine, patch 96 x 16, x2/x3/x4"),
    "seed-1": Variant({"seed": 1}, note="reference, another seed: the noise level"),
    "fp32": Variant({"amp": "none"}, note="no bf16 autocast: what bf16 training costs"),
    "l2": Variant({"loss": "l2"}, note="L2 (MSE) loss"),
    "augment-none": Variant({"augment": "none"}, note="no flips or rotations"),
    "augment-flip": Variant({"augment": "flip"}, note="horizontal flips only"),
    "patch48-batch64": Variant({"patch_size": 48, "batch_size": 64},
                               note="smaller patches, same pixels per step"),
    "patch128-batch9": Variant({"patch_size": 128, "batch_size": 9},
                               note="larger patches, same pixels per step"),
    "constant-lr": Variant({"schedule": "constant"}, note="no decay"),
    "step-lr": Variant({"schedule": "step"}, note="halved every third of the run (EDSR)"),
    "x2-only-third": Variant({"scales": (2,)}, budget=1 / 3,
                             note="x2 alone, the reference's x2 steps"),
    "x2-only-full": Variant({"scales": (2,)}, note="x2 alone, all the steps"),
}

SCALES = (2, 3, 4)


def variant_steps(variant: Variant, args: argparse.Namespace) -> int:
    steps = round(args.steps * variant.budget)
    if steps < args.epoch_steps or steps % args.epoch_steps:
        raise ValueError(f"a variant trains {steps} steps ({variant.budget:.3g} of --steps "
                         f"{args.steps}): expected a multiple of --epoch-steps "
                         f"{args.epoch_steps}")
    return steps


def variant_config(name: str, args: argparse.Namespace, val_images: tuple[str, ...]
                   ) -> SRTrainConfig:
    """The run config of variant ``name``: the reference's fields, then its changes."""
    variant = VARIANTS[name]
    steps = variant_steps(variant, args)
    changes = dict(variant.changes)
    if changes.get("schedule") == "step":
        changes["step_every"] = max(steps // 3, 1)
    return SRTrainConfig(
        model=args.model, data=str(Path(args.data).expanduser().resolve()),
        out=str(Path(args.out) / name), epochs=steps // args.epoch_steps,
        steps_per_epoch=args.epoch_steps, lr=args.lr,
        warmup_steps=round(args.warmup_steps * variant.budget), amp=args.amp,
        val_images=val_images, report_sets=tuple(args.report),
        report_data=str(Path(args.report_data).expanduser().resolve()) if args.report_data
        else "", epoch_report=tuple(args.epoch_report),
        checkpoint_every=args.checkpoint_every, seed=args.seed,
    ).replace(**changes)


def held_out(args: argparse.Namespace) -> tuple[str, ...]:
    """The validation images every variant holds out: the trainer's own choice for
    ``--seed``, fixed here so that the seed-1 variant is scored on the same images."""
    root = Path(args.data)
    names = [p.relative_to(root).as_posix() for p in list_sr_images(root)]
    return tuple(holdout(names, args.val_count, args.seed))


def _mismatch(saved: dict, wanted: SRTrainConfig) -> list[str]:
    """Fields of a started run's config that differ from the variant's config now."""
    # where, how and how often, not what: the trainer's own list of what a resume may
    # change, less the length, which is part of a variant (channels_last included: runs
    # started before that option have no such field)
    free = {"out", *RESUME_CHANGEABLE} - {"epochs"}
    now = json.loads(json.dumps(wanted.to_dict()))  # tuples as lists, like config.json
    return [f"{k} {saved.get(k)!r} (now {v!r})" for k, v in now.items()
            if k not in free and saved.get(k) != v]


def run_variant(name: str, cfg: SRTrainConfig, args: argparse.Namespace) -> dict:
    """Train (or resume, or just read) one variant; returns its ``result.json``."""
    folder = Path(cfg.out)
    done = folder / "result.json"
    resume = (folder / "last.pt").exists()
    if resume or done.exists():
        different = _mismatch(json.loads((folder / "config.json").read_text()), cfg)
        if different:
            raise ValueError(f"{folder} was started with another config ({'; '.join(different)})"
                             f": run it with the options it was started with, or use "
                             f"another --out")
    if done.exists():
        print(f"{name}: finished before, skipped", flush=True)
        return json.loads(done.read_text())
    print(f"{name}: {'resuming' if resume else 'training'} {cfg.total_steps} steps "
          f"({VARIANTS[name].note})", flush=True)
    start = time.perf_counter()
    try:
        if not resume:
            return train_sr(cfg, quiet=args.quiet)
        return train_sr(SRTrainConfig(out=cfg.out), resume=True, quiet=args.quiet,
                        changes={"data": cfg.data, "report_data": cfg.report_data,
                                 "checkpoint_every": cfg.checkpoint_every})
    finally:
        _add_wall_time(Path(args.out), name, time.perf_counter() - start)


def _add_wall_time(out: Path, name: str, seconds: float) -> None:
    """Sum each variant's wall time over the sessions that trained it (``wall_s.json``)."""
    path = out / "wall_s.json"
    walls = json.loads(path.read_text()) if path.exists() else {}
    walls[name] = walls.get(name, 0.0) + seconds
    atomic_write(path, lambda p: p.write_text(json.dumps(walls, indent=2)))


def _rows(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def columns(report_sets: tuple[str, ...]) -> list[str]:
    """The PSNR columns of the table: ``val_x2`` ... then ``Set5_x2`` ... per report set."""
    return [f"{where}_x{s}" for where in ("val", *report_sets) for s in SCALES]


def variant_summary(name: str, result: dict, out: Path, walls: dict) -> dict:
    """PSNR per column, steps, wall time and training steps/s of one finished variant."""
    psnr = {f"val_{k}": v["psnr"] for k, v in result["val"].items()}
    for set_name, per_scale in result.get("report", {}).items():
        psnr |= {f"{set_name}_{k}": v["psnr"] for k, v in per_scale.items()}
    rows = _rows(out / name)
    train_s = math.fsum(r["epoch_time_s"] for r in rows)  # resumed epochs: their last part
    return {"note": VARIANTS[name].note, "changes": VARIANTS[name].changes,
            "steps": result["steps"], "best_epoch": result["best_epoch"], "psnr": psnr,
            "wall_s": walls.get(name), "train_steps_per_s": result["steps"] / train_s
            if train_s > 0 else None,
            "val_bicubic": {k: v["bicubic_psnr"] for k, v in result["val"].items()}}


def machine() -> str:
    """The CPU's model name where Linux tells it, else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def summarize(names: list[str], args: argparse.Namespace) -> dict:
    """``summary.json`` and ``summary.md`` from the finished variants among ``names``."""
    out = Path(args.out)
    walls = json.loads((out / "wall_s.json").read_text()) if (out / "wall_s.json").exists() \
        else {}
    found = {n: json.loads((out / n / "result.json").read_text()) for n in names
             if (out / n / "result.json").exists()}
    variants = {n: variant_summary(n, r, out, walls) for n, r in found.items()}
    ref = variants.get(REFERENCE)
    for v in variants.values():
        v["delta"] = None if ref is None else {
            k: p - ref["psnr"][k] for k, p in v["psnr"].items() if k in ref["psnr"]}
    summary = {"command": args.command, "model": args.model, "steps": args.steps,
               "epoch_steps": args.epoch_steps, "lr": args.lr, "amp": args.amp,
               "threads": torch.get_num_threads(), "torch": torch.__version__,
               "machine": machine(),
               "unfinished": [n for n in names if n not in found], "variants": variants}
    atomic_write(out / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2)))
    atomic_write(out / "summary.md", lambda p: p.write_text(markdown(summary,
                                                                     tuple(args.report))))
    return summary


def markdown(summary: dict, report_sets: tuple[str, ...]) -> str:
    """Two tables: PSNR per variant, then the same columns as deltas vs the reference."""
    cols = columns(report_sets)
    head = "| variant | steps | " + " | ".join(c.replace("_", " ") for c in cols)
    rule = "|---|---|" + "---|" * len(cols)
    lines = [f"{summary['model']}, {summary['steps']} steps (epochs of "
             f"{summary['epoch_steps']}), lr {summary['lr']:g}, amp {summary['amp']}, "
             f"{summary['threads']} thread(s), {summary['machine']}, torch {summary['torch']}",
             "", f"`{summary['command']}`", "",
             "PSNR (dB, Y, scale pixels shaved). val: held-out training images, best-val "
             "checkpoint; Set5/Set14: reported only.", "",
             f"{head} | wall min | train steps/s |", f"{rule}---|---|"]
    for name, v in summary["variants"].items():
        cells = [f"{v['psnr'][c]:.2f}" if c in v["psnr"] else "-" for c in cols]
        wall = f"{v['wall_s'] / 60:.1f}" if v["wall_s"] is not None else "-"
        rate = f"{v['train_steps_per_s']:.2f}" if v["train_steps_per_s"] else "-"
        lines.append(f"| {name} | {v['steps']} | {' | '.join(cells)} | {wall} | {rate} |")
    noise = "; seed-1 shows the run-to-run noise" if "seed-1" in summary["variants"] else ""
    lines += ["", f"Delta vs {REFERENCE} (dB{noise}):", "", head + " |", rule]
    for name, v in summary["variants"].items():
        if name == REFERENCE or v["delta"] is None:
            continue
        cells = [f"{v['delta'][c]:+.2f}" if c in v["delta"] else "-" for c in cols]
        lines.append(f"| {name} | {v['steps']} | {' | '.join(cells)} |")
    lines += ["", *(f"- {name}: {v['note']}" for name, v in summary["variants"].items())]
    if summary["unfinished"]:
        lines += ["", f"Not finished yet: {', '.join(summary['unfinished'])}."]
    return "\n".join(lines) + "\n"


def plot(names: list[str], out: Path, report_sets: tuple[str, ...]) -> Path:
    """``curves.png``: validation PSNR (and per-epoch report sets) against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {n: _rows(out / n) for n in names}
    rows_of = [w for w in ("val", *report_sets)
               if any(f"{w}_psnr_x2" in r for rows in curves.values() for r in rows)]
    rows_of = rows_of or ["val"]
    fig, axes = plt.subplots(len(rows_of), len(SCALES), squeeze=False,
                             figsize=(4.5 * len(SCALES), 3.5 * len(rows_of)))
    for i, where in enumerate(rows_of):
        for j, s in enumerate(SCALES):
            ax = axes[i][j]
            for k, (name, rows) in enumerate(curves.items()):
                pts = [(r["step"], r[f"{where}_psnr_x{s}"]) for r in rows
                       if f"{where}_psnr_x{s}" in r]
                if pts:  # past ten variants the colours repeat: change the line style
                    ax.plot(*zip(*pts, strict=True), ("-", "--", ":")[k // 10 % 3],
                            marker="o", ms=2, color=f"C{k % 10}", label=name)
            ax.set(xlabel="step", ylabel="PSNR (dB, Y)", title=f"{where} x{s}")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "curves.png"
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=90))
    plt.close(fig)
    return path


def estimate(names: list[str], args: argparse.Namespace, val_images: tuple[str, ...]
             ) -> dict[str, dict]:
    """Each variant's full wall time, from a run of ``args.estimate`` steps in a temporary
    folder: decoding + steps / (measured steps/s) + epochs x (one epoch's validation and
    epoch report, timed) + the end of the run (final scores and report, the rest)."""
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            cfg = variant_config(name, args, val_images)
            short = cfg.replace(out=str(Path(tmp) / name), epochs=1,
                                steps_per_epoch=args.estimate, checkpoint_every=0)
            start = time.perf_counter()
            trainer = SRTrainer(short, quiet=True)
            built = time.perf_counter()
            trainer.fit()
            fitted = time.perf_counter()
            validation_scores(trainer.model, trainer.val_pairs)
            for pairs in trainer.epoch_report_pairs.values():
                validation_scores(trainer.model, pairs)
            per_epoch = time.perf_counter() - fitted
            row = _rows(Path(short.out))[-1]
            end = fitted - built - row["epoch_time_s"] - per_epoch
            total = (built - start + cfg.total_steps / row["steps_per_s"]
                     + cfg.epochs * per_epoch + end)
            found[name] = {"steps_per_s": row["steps_per_s"], "eval_per_epoch_s": per_epoch,
                           "setup_s": built - start, "end_s": end, "steps": cfg.total_steps,
                           "estimated_wall_s": total}
            print(f"{name:16s} {row['steps_per_s']:6.2f} steps/s, validation {per_epoch:5.1f} "
                  f"s/epoch, setup {built - start:4.1f} s, end {end:5.1f} s: "
                  f"{cfg.total_steps} steps ~ {total / 60:6.1f} min", flush=True)
    print(f"all {len(found)}: ~ {sum(v['estimated_wall_s'] for v in found.values()) / 3600:.2f}"
          f" h at {torch.get_num_threads()} thread(s)")
    return found


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/sr", help="folder with T91/, BSD200/")
    ap.add_argument("--report-data", default="", help="folder with Set5/ and Set14/ "
                    "(default DATA/matlab_ref)")
    ap.add_argument("--out", default="runs/sr-ablations")
    ap.add_argument("--variants", type=_names, default=tuple(VARIANTS),
                    help=f"comma-separated, from {', '.join(VARIANTS)}")
    ap.add_argument("--model", default="edsr_small")
    ap.add_argument("--steps", type=int, default=3000, help="steps of a full-budget variant")
    ap.add_argument("--epoch-steps", type=int, default=500,
                    help="steps between validations (and checkpoints)")
    ap.add_argument("--lr", type=float, default=SRTrainConfig.lr)
    ap.add_argument("--warmup-steps", type=int, default=100,
                    help="of a full-budget variant (scaled with the budget)")
    ap.add_argument("--amp", default="bf16")
    ap.add_argument("--val-count", type=int, default=SRTrainConfig.val_count)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", type=_names, default=("Set5", "Set14"))
    ap.add_argument("--epoch-report", type=_names, default=("Set5",),
                    help="report sets also scored every epoch, for the curves ('' for none)")
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plot", action="store_true", help="write OUT/curves.png")
    ap.add_argument("--summary-only", action="store_true",
                    help="train nothing: tables (and plot) from the finished variants")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--estimate", type=int, default=0, metavar="N",
                    help="train nothing for keeps: time N steps of each variant and print "
                         "the estimated wall time of the full run")
    args = ap.parse_args(argv)
    args.command = " ".join(["benchmarks/sr_ablations.py",
                             *(sys.argv[1:] if argv is None else argv)])
    unknown = [n for n in args.variants if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}: expected some of {', '.join(VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list(args.variants)
    try:
        if args.estimate:
            estimate(names, args, held_out(args))
            return 0
        if not args.summary_only:
            val_images = held_out(args)
            configs = {n: variant_config(n, args, val_images) for n in names}
            for cfg in configs.values():  # every variant's mistakes, before any training
                cfg.validate()
            for name, cfg in configs.items():
                run_variant(name, cfg, args)
        if not Path(args.out).is_dir():
            raise FileNotFoundError(f"no ablation runs in {args.out}: the folder does not "
                                    "exist")
        summary = summarize(names, args)
        if args.plot:
            print(f"wrote {plot(names, Path(args.out), tuple(args.report))}")
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print((Path(args.out) / "summary.md").read_text())
    if summary["unfinished"]:
        print(f"not finished: {', '.join(summary['unfinished'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
