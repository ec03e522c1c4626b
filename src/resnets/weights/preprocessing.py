"""How an image becomes a network's input: one type and one implementation for the package.

A :class:`Preprocessing` resizes the shorter side, centre-crops, scales to [0, 1] and
normalises per channel. Weight records, the metadata ``resnets train`` writes, eval and
predict, int8 calibration and export all describe and apply preprocessing with it.

The module imports torch only when a preprocessing is applied, so reading records stays
cheap (``resnets weights list``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torchvision.transforms import v2

# torchvision's ImageNet statistics; akamaster's CIFAR ResNets use them too.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CIFAR-10's training-set statistics (what `resnets train` uses for 32 px data).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
MAX_SIDE = 4096  # a network input larger than this is a damaged or hostile record


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize`` (None: keep), centre-crop ``crop`` (None: no
    crop), scale to [0, 1], normalise with ``mean`` and ``std`` per channel."""

    resize: int | None
    crop: int | None
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                             f"got {self.interpolation!r}")
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 1 <= value <= MAX_SIDE):
                raise ValueError(f"preprocessing {name} must be a whole number of pixels from 1 "
                                 f"to {MAX_SIDE} (or none), got {value!r}")
        if self.resize is not None and self.crop is not None and self.crop > self.resize:
            raise ValueError(f"preprocessing centre crop {self.crop} is larger than its resize "
                             f"{self.resize}: the crop would pad the image with black borders")
        mean, std = _floats(self.mean, "mean"), _floats(self.std, "std")
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} "
                             f"and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"preprocessing std must be positive, got {list(std)}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def input_size(self) -> int | None:
        """The side of the square the network sees (None: the image's own size)."""
        return self.crop or self.resize

    def describe(self) -> str:
        steps = []
        if self.resize:
            steps.append(f"resize {self.resize} ({self.interpolation})")
        if self.crop:
            steps.append(f"centre crop {self.crop}")
        mean = ", ".join(f"{m:g}" for m in self.mean)
        std = ", ".join(f"{s:g}" for s in self.std)
        steps.append(f"normalise mean ({mean}) std ({std})")
        return ", ".join(steps)

    def to_dict(self) -> dict[str, Any]:
        """The record layout (``resize``, ``crop``, ``interpolation``, ``mean``, ``std``)."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def to_metadata(self) -> dict[str, Any]:
        """The layout stored in weights files, readable by every version of resnets:
        ``size`` (the crop) and ``resize`` always given, plus ``interpolation``."""
        size = self.input_size
        if size is None:
            raise ValueError("preprocessing without a resize or crop cannot be stored as a "
                             "file's input size")
        return {"mean": list(self.mean), "std": list(self.std), "size": size,
                "resize": self.resize or size, "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, d: Any) -> Preprocessing:
        """Either layout: a record's (``crop``) or a weights file's (``size``)."""
        if not isinstance(d, dict):
            raise ValueError(f"expected preprocessing as a mapping with mean, std and sizes, "
                             f"got {type(d).__name__}")
        try:
            if "crop" in d or ("size" not in d and "resize" in d):
                return cls(resize=d.get("resize"), crop=d.get("crop"),
                           interpolation=d.get("interpolation", "bilinear"),
                           mean=tuple(d["mean"]), std=tuple(d["std"]))
            return cls(resize=d.get("resize", d["size"]), crop=d["size"],
                       interpolation=d.get("interpolation", "bilinear"),
                       mean=tuple(d["mean"]), std=tuple(d["std"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"expected preprocessing with mean, std and size (or resize/crop), "
                             f"got {_short(d)} ({type(e).__name__}: {e})") from None

    def transforms(self) -> v2.Compose:
        """torchvision ``transforms.v2``: PIL image or uint8 tensor (one image or a batch)
        in, normalised float tensor out. A PIL image is resized by PIL, as torchvision's
        presets (and the accuracies published with them) do."""
        return _compose(self)

    def __call__(self, images: Any) -> torch.Tensor:
        """Apply :meth:`transforms`; a plain tensor comes out (not a ``tv_tensors`` one)."""
        import torch

        if isinstance(images, torch.Tensor):
            channels = len(self.mean)
            if images.dim() not in (3, 4) or images.shape[-3] != channels:
                raise ValueError(f"expected a {channels}-channel image (C, H, W) or batch "
                                 f"(N, C, H, W), got shape {tuple(images.shape)}")
        out = _compose(self)(images)
        return out.as_subclass(torch.Tensor)

    def resize_crop(self, images: torch.Tensor) -> torch.Tensor:
        """The geometric steps alone: uint8 image or batch in, uint8 out (resized with
        rounding, as :meth:`__call__` does before scaling). Runs where decoding runs, so that
        whole uint8 batches are normalised at once, or inside an exported graph. An image
        already of the output size comes back as it is (torchvision's resize and crop leave
        it unchanged too), without importing torchvision (over a second at start-up)."""
        import torch

        if self._keeps(images.shape[-2], images.shape[-1]):
            return images.as_subclass(torch.Tensor)
        return _geometry(self)(images).as_subclass(torch.Tensor)

    def _keeps(self, height: int, width: int) -> bool:
        """Whether :meth:`resize_crop` leaves a ``height`` x ``width`` image as it is: its
        shorter side is already ``resize`` (or there is none) and it is ``crop`` square (or
        there is no crop)."""
        resized = self.resize is None or min(height, width) == self.resize
        cropped = self.crop is None or height == width == self.crop
        return resized and cropped

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """The value steps alone: a uint8 image or batch (already resized and cropped) to
        normalised float32. ``normalize(resize_crop(x))`` equals ``self(x)``."""
        import torch

        return _values(self)(images).as_subclass(torch.Tensor)


@functools.lru_cache(maxsize=32)
def _compose(pre: Preprocessing) -> v2.Compose:
    from torchvision.transforms import v2

    return v2.Compose([*_geometry_steps(pre), *_values(pre).transforms])


def _geometry_steps(pre: Preprocessing) -> list[Any]:
    from torchvision.transforms import InterpolationMode, v2

    steps: list[Any] = []
    if pre.resize:
        steps.append(v2.Resize(pre.resize, interpolation=InterpolationMode(pre.interpolation),
                               antialias=True))
    if pre.crop:
        steps.append(v2.CenterCrop(pre.crop))
    return steps


@functools.lru_cache(maxsize=32)
def _geometry(pre: Preprocessing) -> v2.Transform:
    """The resize and crop (the identity for a preprocessing that keeps the image size)."""
    from torchvision.transforms import v2

    steps = _geometry_steps(pre)
    return v2.Compose(steps) if steps else v2.Identity()


@functools.lru_cache(maxsize=32)
def _values(pre: Preprocessing) -> v2.Compose:
    import torch
    from torchvision.transforms import v2

    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(mean=list(pre.mean), std=list(pre.std))])


def _floats(values: Any, name: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"preprocessing {name} must be a list of numbers, got "
                         f"{_short(values)}") from None
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"preprocessing {name} must be finite numbers, got {list(out)}")
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def imagenet_default(size: int = 224) -> Preprocessing:
    """What an ImageNet network expects when its weights say nothing: torchvision's v1
    evaluation (resize 256, centre crop 224) with ImageNet statistics."""
    return Preprocessing(resize=round(size / 0.875), crop=size)


def cifar_default(size: int = 32) -> Preprocessing:
    """What a CIFAR network trained by ``resnets train`` expects: 32 px, CIFAR-10 statistics."""
    return Preprocessing(resize=size, crop=size, mean=CIFAR_MEAN, std=CIFAR_STD)
