"""The degradation experiment (He et al. 2016, Fig. 1 and Fig. 6) made reproducible.

Plain and residual CIFAR networks of several depths train with the same recipe, seeds and
data order through the normal training pipeline. Per epoch we keep the running training
error on augmented batches (what Fig. 6 plots), the clean error on a fixed training
subset, validation and test error. At initialisation and at the end we measure, per
block, the gradient norm of the loss w.r.t. each conv weight and the RMS of the block's
output: the signal that fades through a deep plain network.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import amp_setting, autocast, resolve_device
from ..files import atomic_write
from ..models.blocks import BasicBlock, Bottleneck
from ..train.config import TrainConfig, paper_recipe
from ..train.loop import Trainer
from ..train.run_folder import saved_config


@dataclass
class DegradationConfig:
    data: str = ""                 # CIFAR-10 as an ImageFolder tree (train/, test/)
    out: str = "runs/degradation"
    depths: tuple[int, ...] = (20, 56)
    seeds: tuple[int, ...] = (0, 1)
    epochs: int = 164              # the paper's 164 epochs: 57,564 steps of 128 on 45k images
    subset_per_class: int = 0      # 0 = the whole training split
    train_eval_size: int = 5000
    val_fraction: float = 0.1
    test_limit: int = 0            # 0 = the whole test split
    batch_size: int = 128
    lr: float = 0.1
    amp: str = "auto"
    device: str = "auto"
    quick: bool = False
    only: tuple[str, ...] = ()     # train just these networks (e.g. "resnet56"); () = all
    extra: dict = field(default_factory=dict)  # any other TrainConfig field

    @classmethod
    def quick_setting(cls, **overrides) -> DegradationConfig:
        """Sized for <= 60 minutes on a 2-core CPU: 1,000 training images per class, 12
        epochs (936 steps of 128); errors per epoch on 1,000 clean training images, a 2%
        validation split and 2,000 test images (200 per class)."""
        base = {"subset_per_class": 1000, "epochs": 12, "train_eval_size": 1000,
                "val_fraction": 0.02, "test_limit": 2000, "quick": True}
        base.update(overrides)
        return cls(**base)


# TrainConfig fields the experiment sets itself: an extra setting may not set them again
OWN_FIELDS = ("model", "data", "out", "epochs", "batch_size", "lr", "seed", "amp", "device",
              "subset_per_class", "train_eval_size", "val_fraction", "test_limit",
              "test_every_epoch")


def train_config(cfg: DegradationConfig, net: str, seed: int) -> TrainConfig:
    """The shared recipe: the paper's SGD with lr/10 at 50% and 75%, same seed and order."""
    own = sorted(set(cfg.extra) & set(OWN_FIELDS))
    if own:
        raise ValueError(f"the extra training settings set {', '.join(own)}, which the "
                         "experiment sets itself: give them as the experiment's own options")
    return paper_recipe(
        model=net, data=cfg.data, out=str(Path(cfg.out) / f"{net}-seed{seed}"),
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed, amp=cfg.amp,
        device=cfg.device, subset_per_class=cfg.subset_per_class,
        train_eval_size=cfg.train_eval_size, val_fraction=cfg.val_fraction,
        test_limit=cfg.test_limit, test_every_epoch=True, **cfg.extra)


def signal_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  device: torch.device, amp: torch.dtype | None) -> list[dict]:
    """Per block: RMS of its output and the gradient norm of each of its conv weights."""
    blocks = [(name, m) for name, m in model.named_modules()
              if isinstance(m, (BasicBlock, Bottleneck))]
    acts: dict[str, float] = {}
    hooks = [m.register_forward_hook(
        lambda _m, _i, out, key=name: acts.__setitem__(key, out.float().pow(2).mean().sqrt()
                                                       .item()))
        for name, m in blocks]
    was_training = model.training
    model.train()  # batch statistics, as during training
    model.zero_grad(set_to_none=True)
    with autocast(device, amp):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    for h in hooks:
        h.remove()
    rows = []
    for depth, (name, m) in enumerate(blocks, 1):
        grads = {conv: getattr(m, conv).weight.grad.norm().item()
                 for conv in ("conv1", "conv2", "conv3") if hasattr(m, conv)}
        rows.append({"block": name, "index": depth, "activation_rms": acts[name],
                     "grad_norm": grads, "grad_norm_mean": statistics.fmean(grads.values())})
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return rows


def _probe_batch(trainer: Trainer, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    data = trainer.train_clean_data or trainer.val_data or trainer.train_data
    xs, ys = [], []
    for x, y, _ in data.batches(trainer.cfg.seed, 0,
                                generator=torch.Generator().manual_seed(0)):
        xs.append(x)
        ys.append(y)
        if sum(len(v) for v in ys) >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


# What a (network, seed) run is trained and measured on is every TrainConfig field but these,
# which say where and how it runs: a run folder holding another value of any other field
# (the recipe's weight decay or milestones as much as the epochs) is another setting,
# never summarised under this one.
RUN_ONLY_FIELDS = ("data", "out", "device", "workers", "in_memory", "channels_last",
                   "compile", "compile_mode", "checkpoint_every", "log_every",
                   "max_nonfinite_losses", "test_every_epoch", "strict")


def check_setting(run_dir: Path, tcfg: TrainConfig, record: dict | None = None) -> None:
    """Refuse a run folder whose run was trained (or started) in another setting than
    ``tcfg``: resuming it would continue in its own setting, and its record would be
    summarised under this one's. A record copied without its ``config.json`` is checked on
    its epochs."""
    asked = json.loads(json.dumps(tcfg.to_dict()))  # as config.json holds it (lists)
    device = resolve_device(tcfg.device)
    asked["amp"] = amp_setting(tcfg.amp, device)  # auto: what it is on this machine
    diffs = []
    if record is not None and record.get("epochs") and record["epochs"][-1] != tcfg.epochs:
        diffs.append(f"epochs {record['epochs'][-1]} (its record), asked {tcfg.epochs}")
    saved = saved_config(run_dir)
    if saved is not None:
        if saved.get("amp") == "auto":  # a run folder from before runs stored it resolved
            saved = {**saved, "amp": amp_setting("auto", device)}
        diffs += [f"{k} {saved[k]!r}, asked {asked[k]!r}" for k in asked
                  if k not in RUN_ONLY_FIELDS and k in saved and saved[k] != asked[k]]
    if diffs:
        raise ValueError(f"{run_dir} holds a run of another setting ({'; '.join(diffs)}): "
                         "budgets are never mixed in one summary; use another output folder "
                         "or the run's own setting")


def finished_record(cfg: DegradationConfig, net: str, seed: int) -> dict | None:
    """The record of a finished run of this setting, None when there is none yet."""
    tcfg = train_config(cfg, net, seed)
    path = Path(tcfg.out) / "degradation.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    check_setting(Path(tcfg.out), tcfg, record)
    return record


def run_one(cfg: DegradationConfig, net: str, seed: int, quiet: bool = True) -> dict:
    """Train one (network, seed); resumes a run folder that already holds a checkpoint of
    the same setting (another setting is refused)."""
    tcfg = train_config(cfg, net, seed)
    run_dir = Path(tcfg.out)
    record = finished_record(cfg, net, seed)
    if record is not None:
        return record
    check_setting(run_dir, tcfg)
    resume = (run_dir / "last.pt").exists()
    trainer = Trainer(tcfg, resume=resume, quiet=quiet)
    x, y = _probe_batch(trainer)
    init_path = run_dir / "signal_init.json"
    if init_path.exists():
        at_init = json.loads(init_path.read_text())
    else:
        at_init = signal_report(trainer.model, x, y, trainer.device, trainer.amp)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(init_path, lambda p: p.write_text(json.dumps(at_init)))
    trainer.fit()
    at_end = signal_report(trainer.model, x, y, trainer.device, trainer.amp)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    record = {
        "net": net, "seed": seed, "residual": net.startswith("resnet"),
        "depth": int("".join(c for c in net if c.isdigit())),
        "epochs": [r["epoch"] for r in rows],
        "train_error": [100 - r["train_acc"] for r in rows],
        "train_clean_error": [100 - r["train_clean_acc"] for r in rows if "train_clean_acc" in r],
        "val_error": [100 - r["val_acc"] for r in rows if "val_acc" in r],
        "test_error": [100 - r["test_acc"] for r in rows if "test_acc" in r],
        "train_loss": [r["train_loss"] for r in rows],
        "test_loss": [r["test_loss"] for r in rows if "test_loss" in r],
        "signal_init": at_init, "signal_end": at_end,
    }
    atomic_write(run_dir / "degradation.json", lambda p: p.write_text(json.dumps(record)))
    return record


def summarize(cfg: DegradationConfig, records: list[dict]) -> dict:
    """Final errors per network (mean and spread over seeds) and the paper's comparisons."""
    lengths = {len(r["train_error"]) for r in records}
    if len(lengths) > 1:  # final errors after different budgets are not comparable
        raise ValueError(f"records of different lengths ({sorted(lengths)} epochs) cannot be "
                         "summarised together: budgets are never mixed")
    nets: dict[str, list[dict]] = {}
    for r in records:
        nets.setdefault(r["net"], []).append(r)

    def final(net: str, key: str, seeds: list[int] | None = None) -> tuple[float, float]:
        vals = [r[key][-1] for r in nets[net] if seeds is None or r["seed"] in seeds]
        return statistics.fmean(vals), (max(vals) - min(vals)) / 2

    table = {}
    for net in nets:
        table[net] = {k: dict(zip(("mean", "half_range"), final(net, k), strict=True))
                      for k in ("train_error", "train_clean_error", "test_error")}
    depths = sorted(cfg.depths)
    shallow, deep = depths[0], depths[-1]

    def compare(key: str, what: str) -> list[dict]:
        rows = []
        for a, b, claim in ((f"plain{deep}", f"plain{shallow}", ">"),
                            (f"resnet{deep}", f"resnet{shallow}", "<"),
                            (f"resnet{deep}", f"plain{deep}", "<")):
            # over the seeds both have (a partial --only summary may have more of one):
            # a mean of two seeds against one seed's value, with its half-range of 0, would
            # make the bar meaningless; one seed in common has no spread to clear at all
            seeds = sorted({r["seed"] for r in nets.get(a, [])} &
                           {r["seed"] for r in nets.get(b, [])})
            if not seeds:
                continue
            ma, sa = final(a, key, seeds)
            mb, sb = final(b, key, seeds)
            holds = ma > mb if claim == ">" else ma < mb
            # the bar a difference must clear: the two seed half-ranges added (issue 16)
            rows.append({
                "claim": f"final {what} {a} {claim} {b}", "a": ma, "b": mb, "seeds": seeds,
                "margin": ma - mb, "seed_spread": max(sa, sb), "half_range_sum": sa + sb,
                "holds": holds,
                "beyond_spread": holds and len(seeds) > 1 and abs(ma - mb) > sa + sb})
        return rows

    # The verdicts use the running error on the augmented batches, as the paper's Fig. 6
    # plots it; the same claims on the fixed clean training subset (eval mode) are reported
    # beside them, never in their place.
    return {"setting": asdict(cfg), "final": table,
            "comparisons": compare("train_error", "training error"),
            "comparisons_clean": compare("train_clean_error", "clean training error")}


def plot_errors(records: list[dict], path: Path) -> None:
    """Fig. 6 layout: plain nets left, ResNets right; dashed training, solid test error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    depths = sorted({r["depth"] for r in records})
    colors = dict(zip(depths, ["tab:orange", "tab:blue", "tab:green", "tab:red", "tab:purple"],
                      strict=False))
    for ax, residual in zip(axes, (False, True), strict=True):
        for d in depths:
            runs = [r for r in records if r["depth"] == d and r["residual"] == residual]
            if not runs:
                continue
            epochs = runs[0]["epochs"]
            for key, style, width in (("train_error", "--", 1.0), ("test_error", "-", 2.2)):
                mean = [statistics.fmean(v) for v in zip(*(r[key] for r in runs), strict=True)]
                label = f"{'ResNet' if residual else 'plain'}-{d}" if key == "test_error" else None
                ax.plot(epochs[: len(mean)], mean, style, color=colors[d], lw=width,
                        label=label)
        ax.set(title="residual" if residual else "plain", xlabel="epoch", ylabel="error (%)")
        ax.grid(alpha=0.3)
        ax.legend(title="thin dashed: training, bold: test")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def plot_gradients(records: list[dict], path: Path) -> None:
    """Gradient norm of each block's conv weights vs block depth, plain vs residual."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    deepest = max(r["depth"] for r in records)
    for ax, when in zip(axes, ("signal_init", "signal_end"), strict=True):
        for residual, color in ((False, "tab:red"), (True, "tab:blue")):
            runs = [r for r in records if r["depth"] == deepest and r["residual"] == residual]
            if not runs:
                continue
            idx = [b["index"] for b in runs[0][when]]
            mean = [statistics.fmean(r[when][i]["grad_norm_mean"] for r in runs)
                    for i in range(len(idx))]
            ax.semilogy(idx, mean, "o-", ms=3, color=color,
                        label=f"{'ResNet' if residual else 'plain'}-{deepest}")
        ax.set(title=f"gradient norm per block ({'init' if when == 'signal_init' else 'end'})",
               xlabel="block (input side -> output side)", ylabel="||dL/dW|| (mean of convs)")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def plot_depth(records: list[dict], path: Path) -> None:
    """Final training and test error against depth, plain vs residual, one point per seed
    and a line through the seed means (the paper's claim in one picture)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in zip(axes, ("train_error", "test_error"), ("training", "test"),
                              strict=True):
        for residual, color in ((False, "tab:red"), (True, "tab:blue")):
            runs = [r for r in records if r["residual"] == residual and r[key]]
            if not runs:
                continue
            depths = sorted({r["depth"] for r in runs})
            ax.scatter([r["depth"] for r in runs], [r[key][-1] for r in runs], s=14,
                       color=color, alpha=0.6)
            means = [statistics.fmean(r[key][-1] for r in runs if r["depth"] == d)
                     for d in depths]
            ax.plot(depths, means, "o-", color=color,
                    label=f"{'ResNet' if residual else 'plain'} (mean of seeds)")
            ax.set_xticks(depths)
        ax.set(title=f"final {title} error vs depth", xlabel="layers", ylabel="error (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def plot_gap(records: list[dict], path: Path) -> None:
    """Deepest minus shallowest network's training error per epoch, one line per seed:
    plain left, residual right; dashed on the augmented batches, solid on the clean subset.
    Above zero the deeper net fits worse; the residual panel shows when (if) it crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted({r["depth"] for r in records})
    shallow, deep = depths[0], depths[-1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for ax, residual in zip(axes, (False, True), strict=True):
        by = {(r["depth"], r["seed"]): r for r in records if r["residual"] == residual}
        seeds = sorted({seed for d, seed in by if (shallow, seed) in by and (deep, seed) in by})
        for i, seed in enumerate(seeds):
            a, b = by[(deep, seed)], by[(shallow, seed)]
            for key, style in (("train_error", "--"), ("train_clean_error", "-")):
                n = min(len(a[key]), len(b[key]))
                gap = [x - y for x, y in zip(a[key][:n], b[key][:n], strict=True)]
                ax.plot(a["epochs"][:n], gap, style, color=colors[i % len(colors)],
                        label=f"seed {seed}, {'augmented' if key == 'train_error' else 'clean'}")
        kind = "ResNet" if residual else "plain"
        ax.axhline(0, color="black", lw=0.8)
        ax.set(title=f"{kind}-{deep} minus {kind}-{shallow}", xlabel="epoch",
               ylabel="training error difference (points)")
        ax.grid(alpha=0.3)
        if seeds:
            ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def run_degradation(cfg: DegradationConfig, quiet: bool = True, log=print) -> dict:
    """Train every (plain/residual, depth, seed), then write the summary and the four figures."""
    if not Path(cfg.data).is_dir():  # before the first "training ..." line and the folder
        raise FileNotFoundError(f"dataset not found: {cfg.data} (expected CIFAR-10 as a "
                                "folder holding train/ and test/)")
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {cfg.epochs}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in cfg.seeds:
        for depth in cfg.depths:
            for prefix in ("plain", "resnet"):
                net = f"{prefix}{depth}"
                if cfg.only and net not in cfg.only:  # another process trains it
                    done = finished_record(cfg, net, seed)
                    if done is not None:
                        records.append(done)
                    continue
                log(f"training {net} seed {seed} ({cfg.epochs} epochs"
                    f"{', quick setting' if cfg.quick else ''})")
                records.append(run_one(cfg, net, seed, quiet=quiet))
    if not records:
        return {"setting": asdict(cfg), "final": {}, "comparisons": [], "runs": []}
    summary = summarize(cfg, records)
    summary["runs"] = records
    atomic_write(out / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=1)))
    plot_errors(records, out / "fig6_errors.png")
    plot_gradients(records, out / "gradient_norms.png")
    plot_depth(records, out / "error_vs_depth.png")
    plot_gap(records, out / "depth_gap.png")
    return summary
