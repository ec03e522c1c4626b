"""Training configuration as data: one dataclass, two recipes, CLI flags override fields.

The resolved config is printed at start and saved in the run folder and every checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .fields import check_types, parse_fields

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainConfig:
    # what to train, on what
    model: str = "resnet20"
    data: str = ""                     # ImageFolder root with train/ (and test/), or CIFAR python
    out: str = "runs/run"              # run folder
    num_classes: int | None = None     # default: from the data
    model_kwargs: dict = field(default_factory=dict)
    pretrained: str | None = None      # tag, path or url of weights to start from
    freeze_backbone: bool = False
    backbone_lr_scale: float = 1.0     # backbone lr = lr * scale when fine-tuning
    # optimisation
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    no_decay_bn_bias: bool = False     # no weight decay on BN parameters and biases
    schedule: str = "step"             # "step" | "cosine" | "onecycle"
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of training, for "step"
    gamma: float = 0.1
    warmup_epochs: float = 0.0         # linear warm-up; "onecycle": its rise (default 25%)
    label_smoothing: float = 0.0
    grad_clip: float = 0.0             # max gradient norm, 0 = off
    accum_steps: int = 1
    ema_decay: float = 0.0             # 0 = no EMA of weights
    ema_warmup: bool = False           # decay min(ema_decay, (1+n)/(10+n)) after n updates
    # knowledge distillation (off unless a teacher is given)
    teacher: str | None = None         # weights file or model with bundled weights
    teacher_flip: bool = False         # teacher logits averaged with the flipped image
    distill_alpha: float = 0.5         # weight of the soft (teacher) term
    distill_temperature: float = 4.0
    # data and augmentation
    val_fraction: float = 0.1
    subset_per_class: int = 0          # train on this many images per class (0 = all)
    train_eval_size: int = 0           # also evaluate a fixed clean training subset per epoch
    test_limit: int = 0                # evaluate only a stratified part of the test split
    crop_pad: int = 4                  # small datasets: pad-and-crop
    cutout: int = 0                    # small datasets: cutout square size, 0 = off
    mixup: float = 0.0                 # Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0
    image_size: int | None = None      # network input side; None: the images' own common
                                       # size, else the model's (32 CIFAR, 224 ImageNet)
    crop_min_area: float = 0.08        # photos: RandomResizedCrop's smallest area fraction
    auto_augment: str = ""             # large datasets: "" | "trivial" | "randaugment"
    random_erasing: float = 0.0
    workers: int = 2                   # large datasets: DataLoader workers
    in_memory: str = "auto"            # "auto" | "yes" | "no"
    strict: bool = False               # unreadable images: error instead of skip
    tta: bool = False                  # flip test-time augmentation when evaluating
    test_every_epoch: bool = False     # also evaluate the test split each epoch (reporting only)
    # machine
    device: str = "auto"
    amp: str = "auto"                  # "none" | "bf16" | "fp16" | "auto" (devices.resolve_amp)
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "default"      # torch.compile mode; "reduce-overhead" = CUDA graphs
    sync_bn: bool = False
    seed: int = 0
    checkpoint_every: int = 0          # also every N optimizer steps; 0 = epoch ends only
    log_every: int = 50
    max_nonfinite_losses: int = 3      # stop after this many NaN/inf losses in a row

    def replace(self, **changes) -> TrainConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        if "crop_min_area" not in d and d.get("image_size") == 224:
            # saved before photo folders (issue #15): the in-memory path ignored image_size,
            # whose default was 224; None resumes such a run with the images it had
            d["image_size"] = None
        if "milestones" in d:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)

    @classmethod
    def parse(cls, pairs: dict[str, str]) -> dict:
        """``{field: text}`` (e.g. from ``--set``) to typed values, checked by type."""
        return parse_fields(cls, pairs, "training option")

    def validate(self) -> None:
        """Types and ranges of every field, and the model options; before any file is
        written."""
        check_types(self)
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.gamma > 0, f"gamma must be > 0, got {self.gamma}"),
            (all(0 <= m <= 1 for m in self.milestones),
             f"milestones must be fractions of training in [0, 1], got "
             f"{list(self.milestones)}"),
            (0 <= self.warmup_epochs <= self.epochs,
             f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}"),
            (self.backbone_lr_scale >= 0,
             f"backbone_lr_scale must be >= 0, got {self.backbone_lr_scale}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}"),
            (0 <= self.val_fraction < 1,
             f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.num_classes is None or self.num_classes >= 1,
             f"num_classes must be >= 1, got {self.num_classes}"),
            (self.mixup >= 0 and self.cutmix >= 0,
             f"mixup and cutmix must be >= 0 (0 = off), got {self.mixup}, {self.cutmix}"),
            (0 <= self.random_erasing <= 1,
             f"random_erasing must be in [0, 1], got {self.random_erasing}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.max_nonfinite_losses >= 1,
             f"max_nonfinite_losses must be >= 1, got {self.max_nonfinite_losses}"),
            *[(getattr(self, name) >= 0, f"{name} must be >= 0 (0 = off), got "
                                         f"{getattr(self, name)}")
              for name in ("checkpoint_every", "workers", "subset_per_class",
                           "train_eval_size", "test_limit", "crop_pad", "cutout", "seed")],
            (self.schedule in ("step", "cosine", "onecycle"),
             f"schedule must be step, cosine or onecycle, got {self.schedule!r}"),
            (self.amp in ("none", "bf16", "fp16", "auto"),
             f"amp must be none, bf16, fp16 or auto, got {self.amp!r}"),
            (self.in_memory in ("auto", "yes", "no"),
             f"in_memory must be auto, yes or no, got {self.in_memory!r}"),
            (self.accum_steps >= 1, f"accum_steps must be >= 1, got {self.accum_steps}"),
            (0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (0.0 <= self.label_smoothing < 1.0,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0.0 <= self.distill_alpha <= 1.0,
             f"distill_alpha must be in [0, 1], got {self.distill_alpha}"),
            (self.distill_temperature > 0,
             f"distill_temperature must be > 0, got {self.distill_temperature}"),
            (self.compile_mode in COMPILE_MODES,
             f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got "
             f"{self.compile_mode!r}"),
            (self.image_size is None or 8 <= self.image_size <= 4096,
             f"image_size must be 8 to 4096 pixels, got {self.image_size}"),
            (0.0 < self.crop_min_area <= 1.0,
             f"crop_min_area must be in (0, 1], got {self.crop_min_area}"),
            (self.auto_augment in ("", "trivial", "randaugment"),
             f"auto_augment must be '', trivial or randaugment, got {self.auto_augment!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        check_model_kwargs(self.model, self.model_kwargs)


# What a resumed run may change: where it runs and for how long, not what it computes.
RESUME_CHANGEABLE = ("epochs", "data", "device", "workers", "checkpoint_every", "log_every",
                     "test_every_epoch", "compile", "compile_mode", "max_nonfinite_losses")


def check_model_kwargs(model: str, kwargs: dict) -> None:
    """Refuse options the model's class does not take, listing the ones it does (built on
    the meta device: nothing is allocated)."""
    import inspect

    import torch

    from ..models.registry import build_model, get_spec

    get_spec(model)
    if not kwargs:
        return
    with torch.device("meta"):
        net = build_model(model)
    allowed: set[str] = set()
    for cls in type(net).__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        allowed |= {p.name for p in params if p.default is not inspect.Parameter.empty}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    allowed.discard("num_classes")  # a config field of its own
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"unknown model option(s) for {model}: {', '.join(unknown)}; "
                         f"{model} takes {', '.join(sorted(allowed))}")
    try:
        with torch.device("meta"):
            build_model(model, **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"model options {kwargs} do not fit {model}: {e}") from None


def paper_recipe(**overrides) -> TrainConfig:
    """He et al. 2016, section 4.2: SGD momentum 0.9, lr 0.1, wd 1e-4, batch 128, lr / 10 at
    32k and 48k of 64k iterations (50% and 75% of training), pad-4 crop and flip."""
    base = TrainConfig(lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128,
                       schedule="step", milestones=(0.5, 0.75), amp="none")
    return base.replace(**overrides)


def fast_recipe(**overrides) -> TrainConfig:
    """A short-schedule recipe for a CPU budget: one-cycle lr with nesterov, label
    smoothing, no weight decay on BN/bias, EMA of weights, bf16 autocast.
    BENCHMARKS.md records the ablation behind each choice."""
    base = TrainConfig(lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
                       no_decay_bn_bias=True, batch_size=128, schedule="onecycle",
                       warmup_epochs=0.0, label_smoothing=0.1, ema_decay=0.999, ema_warmup=True,
                       amp="auto")
    return base.replace(**overrides)


def finetune_recipe(**overrides) -> TrainConfig:
    """Fine-tuning a pretrained ImageNet architecture on a few hundred photos, on a CPU: SGD
    nesterov at lr 0.05 (the new head, which starts at zero) with the backbone at a fifth of
    it (0.01), one epoch of linear warm-up then cosine decay, label smoothing 0.1, no weight
    decay on BN/bias, random resized crops of at least 25% of the image (ImageNet's 8%
    destroys small objects at low resolution) and flips, batch 32 (a few hundred images give
    8+ steps an epoch; fits a 2-core CPU), 15 epochs. The learning rates come from a sweep
    on the small-photo transfer setting of BENCHMARKS.md (issue #15): a backbone lr of
    0.01-0.02 was best whatever the head's lr; 0.0025 lost 12 points. Without pretrained
    weights (the recipe's baseline arm) the lr is 0.01: from scratch, 0.05 and 0.1 lost
    11-13 points there, and on 8-image batches 0.05 sent the validation loss to thousands in
    epoch 1."""
    scratch = overrides.get("pretrained") is None
    base = TrainConfig(lr=0.01 if scratch else 0.05, momentum=0.9, nesterov=True,
                       weight_decay=1e-4, no_decay_bn_bias=True, batch_size=32, schedule="cosine",
                       warmup_epochs=1.0, label_smoothing=0.1, backbone_lr_scale=0.2,
                       crop_min_area=0.25, epochs=15, amp="auto")
    return base.replace(**overrides)


RECIPES = {"paper": paper_recipe, "fast": fast_recipe, "finetune": finetune_recipe}


def default_recipe_name(model: str, pretrained: str | None) -> str:
    """``finetune`` for an ImageNet architecture that starts from pretrained weights,
    ``paper`` otherwise."""
    from ..models.registry import get_spec

    if pretrained and get_spec(model).family == "imagenet":
        return "finetune"
    return "paper"


def recipe(name: str, **overrides) -> TrainConfig:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: expected one of {', '.join(RECIPES)}")
    return RECIPES[name](**overrides)
