"""The training loop: one run folder, atomic checkpoints every epoch, exact resume, DDP.

A run folder holds ``config.json``, ``metrics.jsonl`` / ``metrics.csv`` (one row per
epoch), ``curves.png``, ``last.pt`` and ``best.pt`` (full training state) and, at the end,
``model.safetensors`` (the selected weights) with ``result.json``.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import amp_setting, autocast, resolve_amp, resolve_device
from ..models.registry import build_model
from ..weights.loading import load_state_dict_into
from ..weights.state_dict_io import save_safetensors
from .config import RESUME_CHANGEABLE, TrainConfig
from .data import build_data, dataset_mismatch, epoch_seed
from .distill import distillation_loss
from .distributed import DistInfo, init_distributed
from .divergence import NonFiniteGuard, check_weights, likely_cause, step_schedule_without_update
from .fields import lr_jump, resumed_config
from .metrics_log import MetricsLog, progress_bar
from .run_folder import RunFolder, rng_states, set_rng_states

CHECKPOINT_VERSION = 1


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` of ``total``."""
    # the product first: warmup_epochs / epochs * total rounds below whole numbers (1/49*98
    # is 1.999...), a step short; the epsilon covers fractional warm-ups likewise
    warm = int(cfg.warmup_epochs * total / cfg.epochs + 1e-9)
    if step < warm:
        return (step + 1) / warm
    t = step / max(total, 1)
    if cfg.schedule == "step":
        return cfg.gamma ** sum(t >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        progress = (step - warm) / max(total - warm, 1)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    # one-cycle (Smith 2018): linear up to the peak, then linear down to ~0; the peak is at
    # 25%, or at the end of the warm-up when one is given (the warm-up is then the rise)
    if warm:
        return max(0.0, (total - step) / max(total - warm, 1)) * (1 - 1e-3) + 1e-3
    peak = 0.25
    if t < peak:
        return 0.1 + 0.9 * t / peak
    return max(0.0, (1.0 - t) / (1.0 - peak)) * (1 - 1e-3) + 1e-3


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """SGD groups: optionally no weight decay on norms/biases; a scaled lr for the backbone."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = cfg.no_decay_bn_bias and p.ndim <= 1
        is_head = name.startswith("fc.")
        groups.setdefault((no_decay, is_head), []).append(p)
    out = []
    for (no_decay, is_head), params in groups.items():
        scale = 1.0 if is_head or cfg.pretrained is None else cfg.backbone_lr_scale
        out.append({"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay,
                    "lr_scale": scale})
    return out


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float
    n: int
    logits: torch.Tensor
    labels: torch.Tensor


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches, device: torch.device,
                     amp: torch.dtype | None, tta: bool = False,
                     channels_last: bool = False) -> EvalResult:
    """Logits over a whole split (single view, or + horizontal flip averaged)."""
    model.eval()
    all_logits, all_labels = [], []
    for x, y, _ in batches:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(x).float()
            if tta:
                logits = (logits + model(x.flip(-1)).float()) / 2
        all_logits.append(logits.cpu())
        all_labels.append(y.cpu())
    logits = torch.cat(all_logits)
    labels = torch.cat(all_labels)
    k = min(5, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    top1 = (topk[:, 0] == labels).float().mean().item() * 100
    top5 = (topk == labels[:, None]).any(1).float().mean().item() * 100
    loss = F.cross_entropy(logits, labels).item()
    return EvalResult(loss, top1, top5, len(labels), logits, labels)


class Trainer:
    """Builds everything from a :class:`TrainConfig` and runs (or resumes) the training."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, quiet: bool = False,
                 changes: dict | None = None) -> None:
        """``changes`` (a resumed run only): config fields to change where that is safe
        (:data:`RESUME_CHANGEABLE`); any other change is refused, naming it."""
        if not resume:
            cfg.validate()
        if changes and not resume:
            raise ValueError("changes to the config apply to a resumed run only")
        self.run_dir = Path(cfg.out)
        # only rank 0 writes (torchrun sets RANK; a single process is rank 0)
        self.run = RunFolder(self.run_dir, resume, enabled=os.environ.get("RANK", "0") == "0")
        self.resume_state = self.run.resume_state
        try:
            self._setup(cfg, changes or {}, quiet)
        except BaseException:
            self.run.close()
            raise

    def _setup(self, cfg: TrainConfig, changes: dict, quiet: bool) -> None:
        self.changes_applied: list[str] = []
        if self.resume_state is not None:  # the run continues with its own settings
            cfg, self.changes_applied = resumed_config(cfg, self.resume_state, changes,
                                                       RESUME_CHANGEABLE)
        if not cfg.data:
            raise ValueError("no dataset given: expected a data folder (an ImageFolder tree "
                             "or CIFAR python files)")
        if self.resume_state is not None and not Path(cfg.data).exists():
            raise FileNotFoundError(f"cannot resume {self.run_dir}: its dataset {cfg.data} is "
                                    "not there (moved? resume with its new location)")
        # stored absolute, so that a run resumes from any working folder
        cfg = cfg.replace(data=str(Path(cfg.data).expanduser().resolve()))
        self.quiet = quiet
        self.dist: DistInfo = init_distributed(cfg.device)
        self.device = self.dist.device if self.dist.world > 1 else resolve_device(cfg.device)
        if self.resume_state is not None:
            self._check_world()
        self.amp = resolve_amp(cfg.amp, self.device)
        # stored as what it is here: resumed where auto means otherwise, the run keeps it
        self.cfg = cfg = cfg.replace(amp=amp_setting(cfg.amp, self.device))
        if self.device.type == "cuda":  # fixed input shapes: let cuDNN time its kernels once
            torch.backends.cudnn.benchmark = True
        self._build_data()
        if self.resume_state is not None:
            self._check_dataset()
            self.changes_applied += self._lr_change()
        if not quiet and self.dist.is_main:  # the first line: what runs, on what data, why
            _print_config(cfg, self)
        if self.train_images < cfg.batch_size:
            warnings.warn(f"the training set ({self.train_images} images) is smaller than one "
                          f"batch of {cfg.batch_size}: each epoch is one step of all of them",
                          stacklevel=2)
        if len(self.train_data) < cfg.accum_steps:  # not one optimizer step would be taken
            raise ValueError(f"accum_steps {cfg.accum_steps} is more than the "
                             f"{len(self.train_data)} batch(es) of an epoch of "
                             f"{self.train_images} training images: no optimizer step would "
                             "be taken; lower accum_steps or batch_size")
        self._build_model()
        self.log = MetricsLog(self.run_dir, enabled=self.dist.is_main)

    # -- setup -------------------------------------------------------------------------
    def _build_data(self) -> None:
        # in_memory=auto and the input statistics are decided when the run starts: a resume
        # keeps them (checkpoints from before the choice was saved choose again)
        s = self.resume_state or {}
        pre = s.get("preprocess")  # the normalization it trained with, kept
        stats = (pre["mean"], pre["std"]) if pre else None
        data = self.data = build_data(self.cfg, self.device, self.dist.rank, self.dist.world,
                                      s.get("in_memory"), stats)
        self.classes, self.preprocessing = data.classes, data.preprocessing
        self.in_memory, self.skipped = data.in_memory, data.skipped
        self.data_reason = data.reason
        self.train_images = data.train_images
        self.train_data, self.val_data = data.train, data.val
        self.train_clean_data, self.test_data = data.train_clean, data.test
        self.fingerprint = data.fingerprint()

    def _lr_change(self) -> list[str]:
        """A resume with other ``epochs`` stretches the whole schedule over the new length:
        what that does to the learning rate at the step the run goes on from (a finished
        step-schedule run extended to twice its epochs jumps back up by 1/gamma)."""
        s = self.resume_state
        old = TrainConfig.from_dict(s["config"])
        if old.epochs == self.cfg.epochs:
            return []
        per_epoch = len(self.train_data) // self.cfg.accum_steps
        step = s["scheduler"]["last_epoch"]
        before = self.cfg.lr * lr_factor(old, step, per_epoch * old.epochs)
        after = self.cfg.lr * lr_factor(self.cfg, step, per_epoch * self.cfg.epochs)
        return [] if math.isclose(before, after, rel_tol=1e-9) else [lr_jump(
            step, before, after, f"the {self.cfg.schedule} schedule now spans "
                                 f"{self.cfg.epochs} epochs")]

    def _check_world(self) -> None:
        """A resumed run keeps its number of processes: the steps per epoch (and with them
        the learning-rate schedule), the data each process reads from the checkpoint's step
        on and the global batch all depend on it. Checkpoints from before the count was
        saved tell it by their per-rank states (a single process saved none)."""
        s = self.resume_state
        saved = s.get("world")
        if saved is None and "ranks" in s:
            saved = len(s["ranks"]) if s["ranks"] else 1
        if saved is not None and saved != self.dist.world:
            how = (f"{saved} processes (under torchrun: nodes times processes per node)"
                   if saved > 1 else "one process, without torchrun")
            raise ValueError(f"cannot resume {self.run_dir}: it was trained by {saved} "
                             f"process(es), this is {self.dist.world}; resume it with {how}")

    def _check_dataset(self) -> None:
        """A resumed run must see the dataset it started on (runs from before the
        fingerprint was saved are checked on their class list)."""
        s = self.resume_state
        saved = s.get("dataset") or {"classes": s["classes"]}
        problem = dataset_mismatch(saved, self.fingerprint, self.cfg.data)
        if problem:
            raise ValueError(f"cannot resume {self.run_dir}: {problem}; resume with the "
                             "dataset the run started on, or start a new run")

    def _build_model(self) -> None:
        cfg = self.cfg
        num_classes = cfg.num_classes or len(self.classes)
        if cfg.num_classes and cfg.num_classes != len(self.classes):
            raise ValueError(f"num_classes {cfg.num_classes} does not match the "
                             f"{len(self.classes)} class folders of {cfg.data}")
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, num_classes=num_classes, **cfg.model_kwargs)
        if cfg.pretrained and self.resume_state is None:
            from .finetune import load_pretrained_backbone

            load_pretrained_backbone(model, cfg.pretrained, cfg.model, quiet=self.quiet,
                                     classes=self.classes)
        if cfg.freeze_backbone:
            for name, p in model.named_parameters():
                p.requires_grad = name.startswith("fc.")
        if cfg.sync_bn and self.dist.world > 1 and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.ema = None
        if cfg.ema_decay > 0:
            from .ema import weight_ema

            self.ema = weight_ema(model, cfg.ema_decay, cfg.ema_warmup)
        self.teacher = None
        if cfg.teacher:
            from .distill import load_teacher

            with torch.random.fork_rng(devices=[]):  # building it must not move the RNG
                self.teacher = load_teacher(cfg.teacher, self.classes, self.preprocessing,
                                            self.device, cfg.teacher_flip, cfg.channels_last)
        self.train_model: nn.Module = model
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = self.ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=ids)
        if cfg.compile:
            mode = None if cfg.compile_mode == "default" else cfg.compile_mode
            self.train_model = torch.compile(self.train_model, mode=mode)
        self.optimizer = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr,
                                         momentum=cfg.momentum, nesterov=cfg.nesterov)
        self.steps_per_epoch = len(self.train_data) // cfg.accum_steps
        self.total_steps = self.steps_per_epoch * cfg.epochs
        scales = [g["lr_scale"] for g in self.optimizer.param_groups]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, [lambda s, k=k: k * lr_factor(cfg, s, self.total_steps)
                             for k in scales])
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)

    # -- checkpoints -----------------------------------------------------------------
    def _state(self, epoch: int, step_in_epoch: int, generator: torch.Generator,
               best: float, epoch_sums: torch.Tensor | None = None) -> dict:
        """``epoch_sums`` (a mid-epoch checkpoint): the epoch's training loss sum, correct
        count and images so far, summed over ranks, so that a resumed epoch reports all of
        it."""
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "generator": generator.get_state(),  # rank 0's (a single process: its own)
            "rng": rng_states(),
            "world": self.dist.world,
            "ranks": self._rank_states(generator),
            "best_val": best,
            "classes": self.classes,
            "dataset": self.fingerprint,
            "in_memory": self.in_memory,
            "preprocess": self.preprocessing.to_metadata(),
            "epoch_sums": epoch_sums,
        }

    def _rank_states(self, generator: torch.Generator) -> list[dict] | None:
        """Under DDP, every rank's augmentation generator and RNG states (index: the rank),
        gathered on every rank (all of them build each checkpoint), so that a resumed run
        gives each rank its own streams back; None in a single process (``generator`` and
        ``rng`` are its own)."""
        if self.dist.world <= 1:
            return None
        own = {"generator": generator.get_state(), "rng": rng_states()}
        gathered: list = [None] * self.dist.world
        torch.distributed.all_gather_object(gathered, own)
        return gathered

    def _restore_rng(self, generator: torch.Generator, epoch: int) -> None:
        """The resumed run's augmentation generator and RNG states: this rank's own. A DDP
        checkpoint from before per-rank states were saved holds rank 0's alone: rank 0 takes
        them, any other rank starts fresh streams of its own for the epoch (its draws then
        differ from those of the run left uninterrupted: not fast-forwarded, not exact)."""
        s, rank = self.resume_state, self.dist.rank
        ranks = s.get("ranks")
        if ranks is not None and rank < len(ranks):
            generator.set_state(ranks[rank]["generator"])
            set_rng_states(ranks[rank]["rng"])
        elif rank == 0:
            generator.set_state(s["generator"])
            set_rng_states(s["rng"])
        else:
            generator.manual_seed(augment_seed(self.cfg.seed, epoch, rank))
            torch.manual_seed(rank_seed(epoch_seed(self.cfg.seed, epoch), rank))

    def _cause(self) -> str:
        # SGD: a learning rate of 10 or more diverges on any ResNet we train
        return likely_cause(self.cfg.lr, self.amp, self.cfg.grad_clip, high_lr=10.0)

    def _save(self, names: tuple[str, ...], state: dict, epoch: int,
              row: dict | None = None) -> None:
        """Checkpoints of finite weights only: a diverged run keeps its last good one.
        ``row`` (an epoch's end): its metrics, logged before its checkpoint, so that a stop
        between the two leaves a run that replays the epoch and logs it again, rather than
        one that resumes past a row it never wrote."""
        check_weights(self.model, self.run_dir, epoch, self._cause())
        if row is not None:
            self.log.append(row)
        for name in names:
            self.run.save(name, state)

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # -- the loop ---------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to the end (or from where the run stopped); the run folder's lock is
        released however it ends."""
        with self.run:
            return self._fit()

    def _fit(self) -> dict:
        cfg = self.cfg
        # without a validation split the score is -train_loss, which can be below -1
        start_epoch, start_step, best = 0, 0, -math.inf
        generator = torch.Generator(device="cpu")
        if self.resume_state is not None:
            s = self.resume_state
            load_state_dict_into(self.model, s["model"], label=f"{self.run_dir}/last.pt",
                                 model_name=self.cfg.model, keep_head=True)
            if self.ema is not None and s["ema"] is not None:
                self.ema.load_state_dict(s["ema"])
            self.optimizer.load_state_dict(s["optimizer"])
            self.scheduler.load_state_dict(s["scheduler"])
            self.scaler.load_state_dict(s["scaler"])
            start_epoch, start_step, best = s["epoch"], s["step_in_epoch"], s["best_val"]
            self._restore_rng(generator, start_epoch)
            self.log.truncate(start_epoch)
        else:
            self.run.start(cfg.to_dict())
            if self.dist.rank:  # mixup/cutmix and drop path draw here: a stream per rank
                torch.manual_seed(rank_seed(cfg.seed, self.dist.rank))

        for epoch in range(start_epoch, cfg.epochs):
            if start_step == 0 or epoch != start_epoch:
                generator.manual_seed(augment_seed(cfg.seed, epoch, self.dist.rank))
            first = start_step if epoch == start_epoch else 0
            sums = (self.resume_state.get("epoch_sums")
                    if first and self.resume_state is not None else None)
            row = self._train_epoch(epoch, first, generator, best, sums)
            val = (evaluate_batches(self.eval_model(), self.val_data.batches(cfg.seed, epoch),
                                    self.device, self.amp, cfg.tta, cfg.channels_last)
                   if self.val_data is not None else None)
            if val is not None:
                row.update(val_loss=val.loss, val_acc=val.top1)
            if self.train_clean_data is not None:
                clean = evaluate_batches(self.eval_model(),
                                         self.train_clean_data.batches(cfg.seed, epoch),
                                         self.device, self.amp, False, cfg.channels_last)
                row.update(train_clean_loss=clean.loss, train_clean_acc=clean.top1)
            if self.test_data is not None and (cfg.test_every_epoch or epoch == cfg.epochs - 1):
                test = evaluate_batches(self.eval_model(),
                                        self.test_data.batches(cfg.seed, epoch), self.device,
                                        self.amp, cfg.tta, cfg.channels_last)
                row.update(test_loss=test.loss, test_acc=test.top1)
            score = val.top1 if val is not None else -row["train_loss"]
            improved = score > best
            best = max(best, score)
            state = self._state(epoch + 1, 0, generator, best)
            self._save(("best.pt", "last.pt") if improved else ("last.pt",), state, epoch, row)
        return self._finish()

    def _grad_sync(self, window_ends: bool):
        """Where this backward's gradients go: all-reduced across ranks at the end of an
        accumulation window (and always without accumulation), kept local inside it."""
        if self.ddp is None or window_ends:
            return nullcontext()
        return self.ddp.no_sync()

    def _every_rank_has_images(self, images: int) -> bool:
        """Whether this step's batch holds images on every rank. A streamed batch of
        unreadable files only comes empty; under DDP all ranks skip it together, since a
        rank skipping alone would leave the others' buffer broadcast and gradient all-reduce
        unmatched (a hang). Batches in memory are never empty: no collective for them."""
        if self.dist.world == 1 or self.in_memory:
            return images > 0
        flag = torch.tensor([int(images > 0)], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag)

    def _train_epoch(self, epoch: int, first_step: int, generator: torch.Generator,
                     best: float, sums: torch.Tensor | None = None) -> dict:
        cfg = self.cfg
        model = self.train_model
        model.train()
        # the batches that make whole accumulation windows: a remainder would only be
        # computed for its gradient to be dropped at the next epoch's start
        total = self.steps_per_epoch * cfg.accum_steps
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = 0
        if sums is not None and self.dist.is_main:  # resumed mid-epoch: the batches before
            loss_sum += sums[0].to(self.device)      # (summed over ranks: counted once)
            correct += sums[1].to(self.device)
            seen = int(sums[2])
        resumed = seen  # images counted before this process: not in its images/s
        start = time.perf_counter()
        mix = _batch_mixer(cfg, len(self.classes))
        progress = progress_bar(self.quiet or not self.dist.is_main)
        self.optimizer.zero_grad(set_to_none=True)
        guard = NonFiniteGuard(cfg.max_nonfinite_losses, self.run_dir, self._cause(), self.model)
        # closed on any exit: a streamed epoch's loader workers end with it (not at the
        # garbage collector's convenience after an error)
        batches = closing(self.train_data.batches(cfg.seed, epoch, first_step, generator))
        with progress as bar, batches as stream:
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=total,
                                completed=first_step)
            for b, (x, y, _) in enumerate(stream, first_step):
                if b >= total:
                    break
                if not self._every_rank_has_images(len(y)):  # unreadable files only, here
                    if (b + 1) % cfg.accum_steps == 0:  # or on another rank: counted, skipped
                        # the window ends without its step (nor, under DDP, its all-reduce):
                        # its gradients are dropped, as a non-finite loss's are
                        self.optimizer.zero_grad(set_to_none=True)
                        step_schedule_without_update(self.scheduler)
                    continue
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                target = y
                if mix is not None:
                    x, target = mix(x, y)
                # inside an accumulation window gradients stay local (DDP's no_sync); the
                # window's last backward all-reduces their sum
                with self._grad_sync((b + 1) % cfg.accum_steps == 0):
                    guard.keep()
                    with autocast(self.device, self.amp):
                        logits = model(x)
                        if self.teacher is None:
                            loss = F.cross_entropy(logits.float(), target,
                                                   label_smoothing=cfg.label_smoothing)
                        else:
                            loss = distillation_loss(logits.float(), self.teacher(x), target,
                                                     cfg.distill_alpha, cfg.distill_temperature,
                                                     cfg.label_smoothing)
                    # a non-finite step is skipped (as fp16's scaler does), by every rank at once
                    if not guard.finite(loss, epoch, b, total, all_ranks=self.dist.world > 1):
                        self.optimizer.zero_grad(set_to_none=True)
                        if (b + 1) % cfg.accum_steps == 0:  # the window's step is lost, not
                            step_schedule_without_update(self.scheduler)  # its place in the lr
                        continue
                    self.scaler.scale(loss / cfg.accum_steps).backward()
                if (b + 1) % cfg.accum_steps == 0:
                    if cfg.grad_clip > 0:
                        self.scaler.unscale_(self.optimizer)
                        nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scheduler.step()
                    if self.ema is not None:
                        self.ema.update_parameters(self.model)
                loss_sum += loss.detach() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
                seen += len(y)
                if b % cfg.log_every == 0 or b == total - 1:
                    ips = ((seen - resumed) * self.dist.world) / max(time.perf_counter() - start,
                                                                     1e-9)
                    bar.update(task, completed=b + 1, description=(
                        f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum.item() / seen:.3f} "
                        f"acc {100 * correct.item() / seen:.1f}% {ips:.0f} img/s"))
                # every checkpoint_every optimizer steps: never inside an accumulation
                # window, whose gradients a checkpoint does not hold
                if cfg.checkpoint_every and \
                        (b + 1) % (cfg.checkpoint_every * cfg.accum_steps) == 0 \
                        and b + 1 < total:
                    sums = self._epoch_sums(loss_sum, correct, seen).cpu()
                    self._save(("last.pt",), self._state(epoch, b + 1, generator, best, sums),
                               epoch)
        elapsed = time.perf_counter() - start
        loss_sum, correct, seen_all = self._epoch_sums(loss_sum, correct, seen).tolist()
        return {"epoch": epoch + 1, "train_loss": loss_sum / max(seen_all, 1),
                "train_acc": 100 * correct / max(seen_all, 1),
                # the run's rate (the head's): a fine-tuned backbone's group runs at a scale
                "lr": cfg.lr * lr_factor(cfg, self.scheduler.last_epoch, self.total_steps),
                "images_per_s": (seen_all - resumed) / max(elapsed, 1e-9),
                "epoch_time_s": elapsed}

    def _epoch_sums(self, loss_sum: torch.Tensor, correct: torch.Tensor,
                    seen: int) -> torch.Tensor:
        """The epoch's training loss sum, correct count and images so far, over all ranks."""
        stats = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=self.device)])
        if self.dist.world > 1:
            torch.distributed.all_reduce(stats)
        return stats

    def _finish(self) -> dict:
        """Select the best checkpoint's weights, test them, write model + result files."""
        self.skipped = self.data.skipped_images(self.dist.world)  # streamed: found reading
        result = {"run": str(self.run_dir), "classes": self.classes,
                  "skipped_images": self.skipped}
        best_path = self.run_dir / "best.pt"
        if self.dist.is_main and best_path.exists():
            best = self.run.load("best.pt")
            model = build_model(self.cfg.model, num_classes=len(self.classes),
                                 **self.cfg.model_kwargs).to(self.device)
            weights = best["ema"] if best["ema"] is not None else best["model"]
            if best["ema"] is not None:
                weights = {k.removeprefix("module."): v for k, v in weights.items()
                           if k != "n_averaged"}
            load_state_dict_into(model, weights, label=f"{self.run_dir}/best.pt",
                                 model_name=self.cfg.model, keep_head=True)
            result["best_epoch"] = best["epoch"]
            # without a validation split the checkpoint is the lowest-training-loss one
            result["selected_on"] = "val_acc" if self.val_data is not None else "train_loss"
            result["best_val_acc"] = best["best_val"] if self.val_data is not None else None
            if self.test_data is not None:
                test = evaluate_batches(model, self.test_data.batches(self.cfg.seed, 0),
                                        self.device, self.amp, False)
                result.update(test_acc=test.top1, test_top5=test.top5, test_n=test.n)
                tta = evaluate_batches(model, self.test_data.batches(self.cfg.seed, 0),
                                       self.device, self.amp, True)
                result["test_acc_flip_tta"] = tta.top1
            save_safetensors(model.state_dict(), self.run_dir / "model.safetensors", {
                "model": self.cfg.model, "classes": self.classes,
                "preprocess": self.preprocessing.to_metadata(), "config": self.cfg.to_dict(),
                "result": {k: v for k, v in result.items() if k != "classes"}})
            self.run.write_json("result.json", result)
        if self.dist.world > 1:
            torch.distributed.barrier()
        return result


def rank_seed(seed: int, rank: int) -> int:
    """``seed`` itself for rank 0 (a single process's stream is unchanged), and a seed of
    its own for each other DDP rank, far from every epoch's seed of rank 0. The offset
    changes the low 32 bits: a CPU generator (Mersenne Twister) is seeded with those
    alone."""
    return seed if rank == 0 else (seed + rank * 0x9E3779B9) % 2**64


def augment_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of ``rank``'s augmentation generator (crops, flips, cutout) in ``epoch``:
    ranks draw independent augmentations for their batches, not the same ones."""
    return rank_seed(epoch_seed(seed, epoch) + 7, rank)


def _batch_mixer(cfg: TrainConfig, num_classes: int):
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    from torchvision.transforms import v2

    ops = []
    if cfg.mixup > 0:
        ops.append(v2.MixUp(alpha=cfg.mixup, num_classes=num_classes))
    if cfg.cutmix > 0:
        ops.append(v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes))
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


def _print_config(cfg: TrainConfig, trainer: Trainer) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(
        "[bold]resnets train[/bold] " + escape(
            f"{cfg.model} on {cfg.data}: {len(trainer.classes)} classes, device "
            f"{trainer.device}, amp {trainer.amp}, world {trainer.dist.world}, "
            f"{trainer.data_reason}; run folder {trainer.run_dir}"),
        markup=True, highlight=False, soft_wrap=True)
    if trainer.changes_applied:
        Console(stderr=True).print(
            escape(f"resumed with changes: {'; '.join(trainer.changes_applied)}"))


def train(cfg: TrainConfig, resume: bool = False, quiet: bool = False,
          changes: dict | None = None) -> dict:
    """Train (or resume, with safe ``changes``) a run; returns the result record (test
    accuracy when a test set exists)."""
    return Trainer(cfg, resume=resume, quiet=quiet, changes=changes).fit()
