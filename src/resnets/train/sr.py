"""Super-resolution training: the classification trainer's run folder, checkpoints and resume.

A run folder holds ``config.json`` (with the held-out validation images listed),
``metrics.jsonl`` / ``metrics.csv`` (one row per epoch), ``curves.png``, ``last.pt`` and
``best.pt`` (full training state, written atomically) and, at the end, ``model.safetensors``
(the best weights, readable by ``sr-eval --weights`` and ``upscale --weights`` without
``--model``) with ``result.json``.

An epoch here is ``steps_per_epoch`` optimizer steps of random patches, not a pass over the
images, so that checkpoints and validation come every few minutes on a CPU. The best
checkpoint is chosen on validation PSNR of images held out from the training set; Set5 and
Set14 are scored at the end, for the report, and (``epoch_report``) at every epoch end for a
PSNR-versus-steps curve, never to choose anything.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.sr import (
    AUGMENTS,
    TRAIN_SETS,
    PatchSampler,
    SRImages,
    holdout,
    images_mismatch,
    load_sr_images,
)
from ..devices import amp_setting, autocast, resolve_amp, resolve_device
from ..metrics.sr import psnr, rgb_to_y, shave, sr_psnr_ssim
from ..models.imresize import downscale, modcrop, to_float
from ..models.sr import SUPPORTED_SCALES, create_sr_model
from ..tasks.sr_eval import evaluate_sr, load_pairs, super_resolve
from ..weights.loading import load_state_dict_into
from ..weights.sr import bundled_sr_record, load_sr_weights, save_sr_weights
from .config import COMPILE_MODES
from .divergence import NonFiniteGuard, check_weights, likely_cause, step_schedule_without_update
from .fields import check_types, lr_jump, parse_fields, resumed_config
from .metrics_log import MetricsLog, progress_bar
from .run_folder import (
    RunFolder,
    load_training_state,
    rng_states,
    saved_config,
    set_rng_states,
)

CHECKPOINT_VERSION = 1
TRAIN_METADATA_KEY = "resnets.sr.train"  # safetensors metadata: how the weights were trained


@dataclass
class SRTrainConfig:
    # what to train, on what
    model: str = "edsr_small"          # one of resnets.models.sr.list_sr_models()
    model_kwargs: dict = field(default_factory=dict)
    # weights to start from (fine-tuning, with a new optimizer and schedule): a train-sr
    # checkpoint (best.pt, last.pt) or SR weights (.safetensors) of the same network; their
    # run's held-out validation images are held out again
    pretrained: str = ""
    data: str = ""                     # folder holding the training sets (T91/, BSD200/)
    train_sets: tuple[str, ...] = TRAIN_SETS
    out: str = "runs/sr"               # run folder
    scales: tuple[int, ...] = SUPPORTED_SCALES  # one network serves all; batches cycle them
    # the order batches cycle the scales in, a scale repeated to give it more of the steps
    # (2,2,3,4: half the batches at x2); empty: the scales once each
    scale_cycle: tuple[int, ...] = ()
    # patches: HR side, rounded down to a multiple of the scale (96: LR 48 / 32 / 24)
    patch_size: int = 96
    batch_size: int = 16
    augment: str = "dihedral"          # "dihedral" (flips + 90-degree turns) | "flip" | "none"
    # optimisation: L1 loss, Adam, cosine decay (Lim et al. 2017 use L1 and Adam)
    epochs: int = 20
    steps_per_epoch: int = 1000        # an "epoch" is this many steps
    loss: str = "l1"                   # "l1" | "l2"
    lr: float = 5e-4
    schedule: str = "cosine"           # "cosine" | "step" (halve every step_every) | "constant"
    min_lr_ratio: float = 0.0          # cosine ends at lr * this
    step_every: int = 0                # "step": halve the lr every this many steps
    warmup_steps: int = 0              # linear warm-up before any schedule
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 0.0             # max gradient norm, 0 = off
    # validation on held-out training images; Set5/Set14 reported at the end only
    val_count: int = 10
    val_images: tuple[str, ...] = ()   # empty: val_count images by a seeded choice
    report_sets: tuple[str, ...] = ("Set5", "Set14")
    report_data: str = ""              # folder with the report sets; "": DATA/matlab_ref
    epoch_report: tuple[str, ...] = ()  # report sets also scored every epoch (a curve only)
    # machine
    device: str = "auto"
    amp: str = "none"                  # "none" | "bf16" (autocast) | "auto" (stored resolved)
    # NHWC weights and batches: edsr_baseline x2/3/4 with bf16 took 1.00 vs 0.89 steps/s on
    # one CPU thread (batch 16, 96-px patches); the same arithmetic either way
    channels_last: bool = True
    # torch.compile the training forward with dynamic=False: one graph per scale (each
    # scale's patches have one shape); validation and the report run the eager model on
    # images of any size. Under compile the model's bicubic skip is a float32 convolution
    # (autocast is off inside it; eager: float64), equal to float rounding
    compile: bool = False
    compile_mode: str = "default"      # torch.compile mode; "reduce-overhead" = CUDA graphs
    seed: int = 0
    checkpoint_every: int = 0          # also checkpoint every N steps, 0 = epoch ends only
    log_every: int = 10
    max_nonfinite_losses: int = 3      # stop after this many NaN/inf losses in a row

    def __post_init__(self) -> None:  # JSON and --set give lists; the config keeps tuples
        for name in ("train_sets", "scales", "scale_cycle", "betas", "val_images",
                     "report_sets", "epoch_report"):
            setattr(self, name, tuple(getattr(self, name)))

    def replace(self, **changes) -> SRTrainConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown train-sr option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SRTrainConfig:
        return cls(**d)

    @classmethod
    def parse(cls, pairs: dict[str, str]) -> dict:
        """``{field: text}`` (e.g. from ``--set``) to typed values, checked by type."""
        return parse_fields(cls, pairs, "train-sr option")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def report_root(self) -> Path:
        return Path(self.report_data) if self.report_data else Path(self.data) / "matlab_ref"

    def validate(self) -> None:
        check_types(self)
        checks = [
            (bool(self.data), "no training data given: expected a folder holding "
                              f"{', '.join(self.train_sets)}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}"),
            (all(0 <= b < 1 for b in self.betas), f"betas must be in [0, 1), got "
                                                   f"{list(self.betas)}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.max_nonfinite_losses >= 1,
             f"max_nonfinite_losses must be >= 1, got {self.max_nonfinite_losses}"),
            *[(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
              for name in ("warmup_steps", "val_count", "checkpoint_every", "seed")],
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.steps_per_epoch >= 1, f"steps_per_epoch must be >= 1, got "
                                        f"{self.steps_per_epoch}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (bool(self.scales) and all(s in SUPPORTED_SCALES for s in self.scales)
             and len(set(self.scales)) == len(self.scales),
             f"scales must be distinct values of {list(SUPPORTED_SCALES)}, got "
             f"{list(self.scales)}"),
            (not self.scale_cycle or set(self.scale_cycle) == set(self.scales),
             f"scale_cycle must name each of the scales {list(self.scales)} and no other, "
             f"got {list(self.scale_cycle)}"),
            (self.patch_size >= 2 * max(self.scales or (1,)),
             f"patch size must be at least twice the largest scale, got {self.patch_size}"),
            (self.loss in ("l1", "l2"), f"loss must be l1 or l2, got {self.loss!r}"),
            (self.amp in ("none", "bf16", "auto"),
             f"amp must be none, bf16 or auto, got {self.amp!r}"),
            (self.compile_mode in COMPILE_MODES,
             f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got "
             f"{self.compile_mode!r}"),
            (0.0 <= self.min_lr_ratio <= 1.0,
             f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.augment in AUGMENTS,
             f"augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}"),
            (self.schedule in SCHEDULES,
             f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.schedule != "step" or self.step_every >= 1,
             f"the step schedule halves the lr every step_every steps: step_every must be "
             f">= 1, got {self.step_every}"),
            (self.schedule == "step" or self.step_every == 0,
             f"step_every applies to the step schedule only, got step_every "
             f"{self.step_every} with schedule {self.schedule!r}"),
            (self.schedule == "cosine" or self.min_lr_ratio == 0.0,
             f"min_lr_ratio is the cosine schedule's floor, got {self.min_lr_ratio} with "
             f"schedule {self.schedule!r}"),
            (len(set(self.epoch_report)) == len(self.epoch_report),
             f"epoch_report names a set twice: {list(self.epoch_report)}"),
            (self.val_count >= 1 or bool(self.val_images),
             f"need at least one validation image (val_count >= 1), got {self.val_count}"),
            ("scales" not in self.model_kwargs,
             "give the scales as the config's scales, not in model_kwargs"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)


# What a resumed run may change: where it runs and for how long, not what it computes.
# (the report sets are scored once, at the end, and never choose anything)
RESUME_CHANGEABLE = ("epochs", "data", "report_sets", "report_data", "device", "channels_last",
                     "compile", "compile_mode", "checkpoint_every", "log_every",
                     "max_nonfinite_losses")


SCHEDULES = ("cosine", "step", "constant")


def cosine_factor(step: int, total: int, warmup: int = 0, floor: float = 0.0) -> float:
    """Learning-rate multiplier at ``step`` of ``total``: linear warm-up, then a cosine from
    1 down to ``floor`` (Loshchilov & Hutter 2017, without restarts)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(cfg: SRTrainConfig, step: int) -> float:
    """The learning-rate multiplier at optimizer step ``step`` (counted from 0) under
    ``cfg.schedule``, after ``cfg.warmup_steps`` of linear warm-up. ``"step"`` halves the
    rate every ``step_every`` steps counted from the start, as EDSR does (Lim et al. 2017,
    Sec. 4.2: halved every 2x10^5 updates)."""
    if cfg.schedule == "cosine":
        return cosine_factor(step, cfg.total_steps, cfg.warmup_steps, cfg.min_lr_ratio)
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "step":
        return 0.5 ** (step // cfg.step_every)
    return 1.0


ValidationSet = dict[int, list[tuple[str, torch.Tensor, torch.Tensor]]]


def validation_pairs(images: SRImages, scales: tuple[int, ...]) -> ValidationSet:
    """Per scale, ``(name, hr, lr)`` uint8 triples: HR mod-cropped, LR as MATLAB makes it.
    A grayscale file keeps one channel, its own Y (as ``sr-eval`` scores it), not the Y of
    three equal planes (BT.601's 16-235 range scales the error: another number)."""
    out: ValidationSet = {}
    for scale in scales:
        out[scale] = []
        for i, (name, img) in enumerate(zip(images.names, images.images, strict=True)):
            hr = modcrop(img[:1] if images.is_gray(i) else img, scale)
            out[scale].append((name, hr, downscale(hr, scale)))
    return out


@torch.no_grad()
def validation_scores(model: nn.Module, pairs: ValidationSet, with_ssim: bool = False
                      ) -> dict[int, dict[str, float]]:
    """Mean Y-channel PSNR (and SSIM) per scale, ``scale`` pixels shaved, of uint8 results."""
    was_training = model.training
    model.eval()
    scores = {}
    for scale, triples in pairs.items():
        p, s = [], []
        for _, hr, lr in triples:
            sr = super_resolve(model, lr, scale)
            if with_ssim:
                a, b = sr_psnr_ssim(sr, hr, scale)
                p.append(a)
                s.append(b)
            else:
                p.append(psnr(shave(rgb_to_y(sr), scale), shave(rgb_to_y(hr), scale)))
        scores[scale] = {"psnr": math.fsum(p) / len(p)}
        if with_ssim:
            scores[scale]["ssim"] = math.fsum(s) / len(s)
    model.train(was_training)
    return scores


class SRTrainer:
    """Builds everything from an :class:`SRTrainConfig` and runs (or resumes) the training."""

    def __init__(self, cfg: SRTrainConfig, resume: bool = False, quiet: bool = False,
                 changes: dict | None = None) -> None:
        """``changes`` (a resumed run only): config fields to change where that is safe
        (:data:`RESUME_CHANGEABLE`); any other change is refused, naming it."""
        if not resume:
            cfg.validate()
        if changes and not resume:
            raise ValueError("changes to the config apply to a resumed run only")
        self.run_dir = Path(cfg.out)
        self.run = RunFolder(self.run_dir, resume)
        self.resume_state = self.run.resume_state
        try:
            self._setup(cfg, changes or {}, quiet)
        except BaseException:
            self.run.close()
            raise

    def _setup(self, cfg: SRTrainConfig, changes: dict, quiet: bool) -> None:
        self.changes_applied: list[str] = []
        if self.resume_state is not None:  # the run continues with its own settings
            cfg, self.changes_applied = resumed_config(cfg, self.resume_state, changes,
                                                       RESUME_CHANGEABLE)
        cfg = cfg.replace(data=str(Path(cfg.data).expanduser().resolve()))
        if cfg.pretrained:  # stored absolute, as the data, for the record
            cfg = cfg.replace(pretrained=str(Path(cfg.pretrained).expanduser().resolve()))
        self.quiet = quiet
        self.device = resolve_device(cfg.device)
        # "auto" is stored as what it means on this machine, so a resume elsewhere keeps it
        cfg = cfg.replace(amp=amp_setting(cfg.amp, self.device))
        self.amp = resolve_amp(cfg.amp, self.device)
        self.cfg = cfg
        self._build_model()  # before the data: a wrong model name fails at once
        self.cfg = self._build_data(cfg)
        if self.resume_state is not None:
            self.changes_applied += self._lr_change()
        self.log = MetricsLog(self.run_dir, columns=metric_columns(self.cfg.scales,
                                                                   self.cfg.epoch_report),
                              figure=sr_curves)

    # -- setup -------------------------------------------------------------------------
    def _lr_change(self) -> list[str]:
        """A resume with other ``epochs`` stretches the schedule (its ``total_steps``):
        what that does to the learning rate at the step the run goes on from."""
        s = self.resume_state
        old = SRTrainConfig.from_dict(s["config"])
        if old.total_steps == self.cfg.total_steps:
            return []
        step = s["scheduler"]["last_epoch"]
        before, after = (self.cfg.lr * lr_factor(c, step) for c in (old, self.cfg))
        return [] if math.isclose(before, after, rel_tol=1e-9) else [lr_jump(
            step, before, after, f"the {self.cfg.schedule} schedule now spans "
                                 f"{self.cfg.total_steps:,} steps")]

    def _build_data(self, cfg: SRTrainConfig) -> SRTrainConfig:
        """Decode the images, hold out the validation images; returns the config with them
        listed (so config.json and every checkpoint name them)."""
        data = load_sr_images(cfg.data, cfg.train_sets)
        self.fingerprint = data.fingerprint()
        # runs whose checkpoints predate the fingerprint resume unchecked
        if self.resume_state is not None and "dataset" in self.resume_state:
            problem = images_mismatch(self.resume_state["dataset"], self.fingerprint, cfg.data)
            if problem:
                raise ValueError(f"cannot resume {self.run_dir}: {problem}; resume with the "
                                 "images the run started on, or start a new run")
        for name in dict.fromkeys(cfg.report_sets + cfg.epoch_report):  # now, not hours later
            folder = cfg.report_root() / name
            if not folder.is_dir():
                raise FileNotFoundError(f"report set {name} not found: expected {folder} "
                                        "(report no benchmark sets to skip the report)")
        # decoded once; scored every epoch for the curve, never to choose a checkpoint
        self.epoch_report_pairs = {
            name: {s: load_pairs(cfg.report_root() / name, s) for s in cfg.scales}
            for name in cfg.epoch_report}
        start_val = self.pretrained_val if self.resume_state is None else None
        if start_val is not None and cfg.val_images and tuple(cfg.val_images) != start_val:
            raise ValueError(f"the pretrained weights {cfg.pretrained} were validated on other "
                             "held-out images than the ones asked: leave val_images out to "
                             "hold out theirs")
        val_names = (list(cfg.val_images) or list(start_val or ())
                     or holdout(data.names, cfg.val_count, cfg.seed))
        unknown = sorted(set(val_names) - set(data.names))
        if unknown:
            raise ValueError(f"validation image(s) {unknown[:3]} are not among the "
                             f"{len(data)} training images of {cfg.data}")
        held = set(val_names)
        train_names = [n for n in data.names if n not in held]
        if not train_names:
            raise ValueError(f"all {len(data)} images are held out for validation: hold "
                             "out fewer")
        self.val = data.subset(val_names)
        self.sampler = PatchSampler(data.subset(train_names), cfg.patch_size, cfg.scales,
                                    cfg.augment)
        self.val_pairs = validation_pairs(self.val, cfg.scales)
        return cfg.replace(val_images=tuple(val_names))

    def _build_model(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        model = create_sr_model(cfg.model, scales=cfg.scales, **cfg.model_kwargs)
        if next(model.parameters(), None) is None:
            raise ValueError(f"{cfg.model} has no parameters to train: pick a network, e.g. "
                             f"edsr_small")
        if model.config.in_chans != 3:
            raise ValueError(f"train-sr trains RGB networks (in_chans 3), got in_chans "
                             f"{model.config.in_chans}")
        self.pretrained_val = None
        if cfg.pretrained and self.resume_state is None:  # a resumed run has its own weights
            state, self.pretrained_val = pretrained_weights(cfg.pretrained)
            load_state_dict_into(model, state, label=cfg.pretrained, model_name=cfg.model,
                                 keep_head=True)
        self.model = model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_model: nn.Module = self.model  # the same module; checkpoints name its keys
        if cfg.compile:
            mode = None if cfg.compile_mode == "default" else cfg.compile_mode
            self.train_model = torch.compile(self.model, mode=mode, dynamic=False)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                          weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lambda s: lr_factor(cfg, s))
        self.params = sum(p.numel() for p in model.parameters())

    def _cause(self) -> str:
        # Adam: EDSR trains at 1e-4 to 5e-4; 0.1 and more diverges
        return likely_cause(self.cfg.lr, self.amp, self.cfg.grad_clip, high_lr=0.1)

    # -- checkpoints -------------------------------------------------------------------
    def _state(self, epoch: int, step_in_epoch: int, generator: torch.Generator, best: float,
               best_epoch: int, loss_sum: float = 0.0, steps: int = 0) -> dict:
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.cfg.to_dict(),
            "dataset": self.fingerprint,  # checked on resume (data.sr.images_mismatch)
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "epoch_loss_sum": loss_sum,  # so a resumed epoch reports the same train loss
            "epoch_steps": steps,  # the steps trained on in loss_sum (skipped ones are not)
            "generator": generator.get_state(),  # the patch sampler's: exact resume
            "rng": rng_states(),
            "best_val": best,
            "best_epoch": best_epoch,
        }

    # -- the loop ----------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to the end (or from where the run stopped); the run folder's lock is
        released however it ends."""
        with self.run:
            return self._fit()

    def _fit(self) -> dict:
        cfg = self.cfg
        start_epoch, start_step, loss_sum, steps = 0, 0, 0.0, 0
        best, best_epoch = -math.inf, 0
        generator = torch.Generator().manual_seed(cfg.seed)
        if self.resume_state is not None:
            s = self.resume_state
            load_state_dict_into(self.model, s["model"], label=f"{self.run_dir}/last.pt",
                                 model_name=cfg.model, keep_head=True)
            self.optimizer.load_state_dict(s["optimizer"])
            self.scheduler.load_state_dict(s["scheduler"])
            start_epoch, start_step = s["epoch"], s["step_in_epoch"]
            loss_sum, best, best_epoch = s["epoch_loss_sum"], s["best_val"], s["best_epoch"]
            steps = s.get("epoch_steps", start_step)  # checkpoints from before it: all trained
            if not (self.run_dir / "best.pt").exists():  # a run brought without it
                best, best_epoch = -math.inf, 0  # the best is chosen from the epochs to come
            generator.set_state(s["generator"])
            set_rng_states(s["rng"])
            self.log.truncate(start_epoch)
        else:
            self.run.start(cfg.to_dict())
        self.bicubic = validation_scores(create_sr_model("bicubic"), self.val_pairs)
        if not self.quiet:
            self._print_start()
        for epoch in range(start_epoch, cfg.epochs):
            first = start_step if epoch == start_epoch else 0
            row = self._train_epoch(epoch, first, generator, best, best_epoch,
                                    loss_sum if epoch == start_epoch else 0.0,
                                    steps if epoch == start_epoch else 0)
            val = validation_scores(self.model, self.val_pairs)
            for scale, v in val.items():
                row[f"val_psnr_x{scale}"] = v["psnr"]
                row[f"bicubic_psnr_x{scale}"] = self.bicubic[scale]["psnr"]
            row["val_psnr"] = math.fsum(v["psnr"] for v in val.values()) / len(val)
            for name, pairs in self.epoch_report_pairs.items():  # a curve, never a choice
                for scale, v in validation_scores(self.model, pairs).items():
                    row[f"{name}_psnr_x{scale}"] = v["psnr"]
            check_weights(self.model, self.run_dir, epoch, self._cause())
            # the row before its checkpoint: a stop between the two replays the epoch on
            # resume (which truncates the log to the checkpoint) instead of losing the row
            self.log.append(row)
            if row["val_psnr"] > best:
                best, best_epoch = row["val_psnr"], epoch + 1
                state = self._state(epoch + 1, 0, generator, best, best_epoch)
                self.run.save("best.pt", state)
            else:
                state = self._state(epoch + 1, 0, generator, best, best_epoch)
            self.run.save("last.pt", state)
            if not self.quiet:
                self._print_epoch(row)
        return self._finish()

    def _train_epoch(self, epoch: int, first_step: int, generator: torch.Generator,
                     best: float, best_epoch: int, loss_carried: float,
                     steps_carried: int = 0) -> dict:
        cfg = self.cfg
        model = self.model
        model.train()
        spe = cfg.steps_per_epoch
        loss_sum = torch.tensor(loss_carried, dtype=torch.float64, device=self.device)
        trained = steps_carried  # steps in loss_sum: a skipped non-finite one is not
        guard = NonFiniteGuard(cfg.max_nonfinite_losses, self.run_dir, self._cause(), model)
        start = time.perf_counter()
        with progress_bar(self.quiet) as bar:
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=spe,
                                completed=first_step)
            cycle = cfg.scale_cycle or cfg.scales
            for b in range(first_step, spe):
                scale = cycle[(epoch * spe + b) % len(cycle)]
                lr_u8, hr_u8 = self.sampler.sample(cfg.batch_size, scale, generator, self.device)
                lr_img = to_float(lr_u8)
                if cfg.channels_last:
                    lr_img = lr_img.contiguous(memory_format=torch.channels_last)
                hr_img = to_float(hr_u8)
                guard.keep()
                with autocast(self.device, self.amp):
                    sr = self.train_model(lr_img, scale)
                loss = (F.l1_loss if cfg.loss == "l1" else F.mse_loss)(sr.float(), hr_img)
                if not guard.finite(loss, epoch, b, spe):  # skipped: no update
                    step_schedule_without_update(self.scheduler)  # the lr follows the step
                    continue
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                loss_sum += loss.detach()
                trained += 1
                if b % cfg.log_every == 0 or b == spe - 1:
                    rate = (b + 1 - first_step) / max(time.perf_counter() - start, 1e-9)
                    bar.update(task, completed=b + 1, description=(
                        f"epoch {epoch + 1}/{cfg.epochs} {cfg.loss} "
                        f"{loss_sum.item() / max(trained, 1):.4f} {rate:.2f} steps/s"))
                if cfg.checkpoint_every and (b + 1) % cfg.checkpoint_every == 0 and b + 1 < spe:
                    check_weights(self.model, self.run_dir, epoch, self._cause())
                    self.run.save("last.pt", self._state(
                        epoch, b + 1, generator, best, best_epoch, loss_sum.item(), trained))
        elapsed = time.perf_counter() - start
        return {"epoch": epoch + 1, "step": (epoch + 1) * spe,
                "train_loss": loss_sum.item() / max(trained, 1),
                "lr": self.optimizer.param_groups[0]["lr"],
                "steps_per_s": (spe - first_step) / max(elapsed, 1e-9),
                "epoch_time_s": elapsed}

    def _finish(self) -> dict:
        """The best checkpoint's weights: scored on validation and the report sets, saved.
        A run resumed with its epochs done but without ``best.pt`` (a GPU lease brings back
        ``last.pt`` alone) ends with its last weights, and says so."""
        cfg = self.cfg
        chosen = "best.pt" if (self.run_dir / "best.pt").exists() else "last.pt"
        best = self.run.load(chosen)
        model = create_sr_model(cfg.model, scales=cfg.scales, **cfg.model_kwargs)
        load_state_dict_into(model, best["model"], label=f"{self.run_dir}/{chosen}",
                             model_name=cfg.model, keep_head=True)
        model = model.to(self.device).eval()
        val = validation_scores(model, self.val_pairs, with_ssim=True)
        if chosen == "last.pt":  # its best_* name the best.pt that is not here
            best = {"best_epoch": best["epoch"],
                    "best_val": math.fsum(v["psnr"] for v in val.values()) / len(val)}
        bicubic = validation_scores(create_sr_model("bicubic"), self.val_pairs, with_ssim=True)
        result: dict = {
            "run": str(self.run_dir), "model": cfg.model, "params": self.params,
            "scales": list(cfg.scales), "steps": cfg.total_steps,
            "best_epoch": best["best_epoch"], "best_val_psnr": best["best_val"],
            "weights": chosen,  # best.pt, or last.pt where a run came back without it
            "val_images": list(cfg.val_images),
            "excluded_small_images": self.sampler.excluded,
            "val": {f"x{s}": {"psnr": val[s]["psnr"], "ssim": val[s]["ssim"],
                              "bicubic_psnr": bicubic[s]["psnr"],
                              "bicubic_ssim": bicubic[s]["ssim"]} for s in cfg.scales},
        }
        save_sr_weights(model, self.run_dir / "model.safetensors", {
            TRAIN_METADATA_KEY: json.dumps({"config": cfg.to_dict(),
                                            "best_epoch": result["best_epoch"],
                                            "val": result["val"]})})
        report: dict = {}
        for name in cfg.report_sets:  # reported, never used to choose anything
            report[name] = {}
            for s in cfg.scales:
                ev = evaluate_sr(model, cfg.report_root() / name, s, label=cfg.model)
                (p, q), (bp, bq) = ev.mean(), ev.bicubic_mean()
                report[name][f"x{s}"] = {"psnr": p, "ssim": q, "bicubic_psnr": bp,
                                         "bicubic_ssim": bq}
        result["report"] = report
        self.run.write_json("result.json", result)
        return result

    # -- console -----------------------------------------------------------------------
    def _print_start(self) -> None:
        from rich.console import Console
        from rich.markup import escape

        cfg = self.cfg
        bic = ", ".join(f"x{s} {v['psnr']:.2f}" for s, v in self.bicubic.items())
        Console(stderr=True).print("[bold]resnets train-sr[/bold] " + escape(
            f"{cfg.model} ({self.params:,} parameters) at "
            f"x{'/x'.join(map(str, cfg.scales))} on {len(self.sampler.names)} images of "
            f"{cfg.data} ({'+'.join(cfg.train_sets)}), {len(self.val)} held out "
            f"(bicubic val PSNR {bic} dB); {cfg.epochs} epochs of {cfg.steps_per_epoch} steps, "
            f"{cfg.loss} loss, lr {cfg.lr:g} {cfg.schedule}, augment {cfg.augment}, "
            f"device {self.device}, amp {cfg.amp}{', compiled' if cfg.compile else ''}; run "
            f"folder {self.run_dir}"))
        if self.changes_applied:
            Console(stderr=True).print(
                escape(f"resumed with changes: {'; '.join(self.changes_applied)}"))

    def _print_epoch(self, row: dict) -> None:
        from rich.console import Console

        per_scale = ", ".join(
            f"x{s} {row[f'val_psnr_x{s}']:.2f} "
            f"({row[f'val_psnr_x{s}'] - row[f'bicubic_psnr_x{s}']:+.2f} vs bicubic)"
            for s in self.cfg.scales)
        report = "".join(f"; {name} " + ", ".join(f"x{s} {row[f'{name}_psnr_x{s}']:.2f}"
                                                  for s in self.cfg.scales)
                         for name in self.cfg.epoch_report)
        Console(stderr=True).print(f"epoch {row['epoch']}: val PSNR {per_scale}{report}")


def metric_columns(scales: tuple[int, ...], epoch_report: tuple[str, ...] = ()
                   ) -> tuple[str, ...]:
    """metrics.csv columns for a run at ``scales`` scoring ``epoch_report`` every epoch."""
    per_scale = [c for s in scales for c in (f"val_psnr_x{s}", f"bicubic_psnr_x{s}")]
    report = [f"{name}_psnr_x{s}" for name in epoch_report for s in scales]
    return ("epoch", "step", "train_loss", "val_psnr", *per_scale, *report, "lr",
            "steps_per_s", "epoch_time_s")


def sr_curves(rows: list[dict]):
    """Training loss and validation PSNR per scale (bicubic dashed, ``epoch_report`` sets
    dotted) against the epoch."""
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] for r in rows]
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "-", label="train")
    scales = sorted(int(k.removeprefix("val_psnr_x")) for k in (rows[0] if rows else {})
                    if k.startswith("val_psnr_x"))
    for s in scales:
        line, = ax_psnr.plot(epochs, [r[f"val_psnr_x{s}"] for r in rows], "-o", ms=3,
                             label=f"x{s}")
        ax_psnr.plot(epochs, [r[f"bicubic_psnr_x{s}"] for r in rows], "--",
                     color=line.get_color(), label=f"x{s} bicubic")
        for key in sorted(k for k in rows[0] if k.endswith(f"_psnr_x{s}")
                          and not k.startswith(("val_", "bicubic_"))):  # epoch_report sets
            ax_psnr.plot(epochs, [r[key] for r in rows], ":", color=line.get_color(),
                         label=f"x{s} {key.removesuffix(f'_psnr_x{s}')}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss")
    ax_psnr.set(xlabel="epoch", ylabel="PSNR (dB, Y)", title="held-out validation PSNR")
    for ax in (ax_loss, ax_psnr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pretrained_weights(path: str | Path) -> tuple[dict, tuple[str, ...] | None]:
    """The state dict a fine-tuning run starts from, with the images its run held out for
    validation when known: a train-sr checkpoint names them in its config; a weights file,
    in the ``config.json`` of the run folder it sits in or in its bundled record
    (``<stem>.json``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path} (expected a train-sr "
                                "checkpoint, .pt, or SR weights, .safetensors)")
    if path.suffix == ".pt":
        state = load_training_state(path)
        config = state.get("config", {})
        return state["model"], tuple(config.get("val_images") or ()) or None
    state = load_sr_weights(path).state_dict()
    for config in _weights_configs(path):
        if config.get("val_images"):
            return state, tuple(config["val_images"])
    return state, None


def _weights_configs(path: Path) -> list[dict]:
    """The configs that may describe a weights file's training: its run folder's
    ``config.json`` (a run's model.safetensors), then its bundled record's."""
    try:
        run_config = saved_config(path.parent)
    except (OSError, ValueError):  # unreadable: as if there were none
        run_config = None
    return [c for c in (run_config, bundled_sr_record(path).get("config"))
            if isinstance(c, dict) and c]


def _checkpoint_step(state: dict) -> int:
    """The optimizer step a train-sr checkpoint was saved at."""
    return state["epoch"] * state["config"]["steps_per_epoch"] + state["step_in_epoch"]


def pretrained_origin(path: str | Path) -> dict:
    """Where a fine-tuning run's start came from, for a bundled record's provenance: the
    file's name and, when it says so, the config of the run that trained it and (for a
    checkpoint) the optimizer step it was saved at; followed back through that run's own
    ``pretrained`` while its file is still there."""
    path = Path(path).expanduser()
    origin: dict = {"file": path.name}
    if path.suffix == ".pt":
        state = load_training_state(path)
        config = state.get("config") or {}
        if config:
            origin["step"] = _checkpoint_step(state)
    else:
        config = next(iter(_weights_configs(path)), {})
    if config:
        origin["config"] = config
        source = config.get("pretrained")
        if source and Path(source).expanduser().is_file():
            origin["started_from"] = pretrained_origin(source)
    return origin


def checkpoint_model(path: str | Path) -> tuple[nn.Module, dict, int]:
    """The network of a ``train-sr`` checkpoint (``best.pt``, ``last.pt``) in eval mode,
    with the run's config and the optimizer step it was saved at: for curve points and
    checks on a run still training, before it has a ``model.safetensors``."""
    state = load_training_state(path)
    cfg = state["config"]
    model = create_sr_model(cfg["model"], scales=tuple(cfg["scales"]),
                            **cfg.get("model_kwargs", {}))
    load_state_dict_into(model, state["model"], label=str(path), model_name=cfg["model"],
                         keep_head=True)
    return model.eval(), cfg, _checkpoint_step(state)


def train_sr(cfg: SRTrainConfig, resume: bool = False, quiet: bool = False,
             changes: dict | None = None) -> dict:
    """Train (or resume, with safe ``changes``) a super-resolution run; returns the result
    record."""
    return SRTrainer(cfg, resume=resume, quiet=quiet, changes=changes).fit()
