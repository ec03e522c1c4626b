"""Super-resolution training data: VDSR's "291" images in memory, random patches, LR on the fly.

The 291 images are Yang et al.'s T91 plus the 200 BSDS300 training images (Kim et al. 2016,
Sec. 4.1). They are decoded once into uint8 tensors. A few of them, chosen with a seeded
permutation, are held out for validation (checkpoint selection); Set5 and Set14 are never
used for that. A training batch is ``batch`` random HR patches, each with a random flip and
90-degree rotation (``augment="dihedral"``, the default; ``"flip"``: a horizontal flip only;
``"none"``), and their LR versions made exactly as the benchmarks made theirs:
MATLAB-style bicubic ``downscale`` of the uint8 patch, rounded to uint8. Every random draw
comes from one ``torch.Generator`` the caller owns, so saving its state makes resume exact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.imresize import downscale
from .io import image_tensor, is_image_file, open_image

TRAIN_SETS = ("T91", "BSD200")  # VDSR's "291" (Kim et al. 2016, Sec. 4.1)
# Patch augmentations: the 8 flips/rotations (Lim et al. 2017, Sec. 4.2: "random rotations by
# 90 degrees and horizontal flips"), a horizontal flip alone, or none.
AUGMENTS = ("dihedral", "flip", "none")


@dataclass
class SRImages:
    """Decoded images and their names (``SET/file``), uint8 ``(3, H, W)`` of varied sizes;
    ``gray`` marks the files that are grayscale (three equal planes here, one channel, their
    own Y, where they are scored: as ``sr-eval`` scores them)."""

    names: list[str]
    images: list[torch.Tensor]
    gray: list[bool] = field(default_factory=list)  # empty: none is

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, names: Sequence[str]) -> SRImages:
        where = {n: i for i, n in enumerate(self.names)}
        return SRImages(list(names), [self.images[where[n]] for n in names],
                        [self.is_gray(where[n]) for n in names])

    def is_gray(self, i: int) -> bool:
        return bool(self.gray) and self.gray[i]

    def fingerprint(self) -> dict:
        """What a resumed run checks to know it trains on the same images: their count and
        the sha256 of every name, shape and decoded pixel (a fraction of a second for the
        291 images, already in memory)."""
        h = hashlib.sha256()
        for name, image in zip(self.names, self.images, strict=True):
            h.update(f"{name}:{tuple(image.shape)}\n".encode())
            h.update(image.contiguous().numpy().tobytes())
        return {"images": len(self.names), "sha256": h.hexdigest()}


def images_mismatch(saved: dict, now: dict, data: str) -> str | None:
    """Why the training images at ``data`` (fingerprint ``now``) are not those a run started
    on (``saved``), or None when they are the same."""
    if saved["images"] != now["images"]:
        return (f"{data} holds {now['images']} training images, the run started on "
                f"{saved['images']}")
    if saved["sha256"] != now["sha256"]:
        return (f"the {now['images']} training images of {data} differ from the run's in "
                "names or pixels")
    return None


def list_sr_images(root: str | Path, sets: Sequence[str] = TRAIN_SETS) -> list[Path]:
    """The image files of ``root/SET`` for every set, sorted by set then name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"expected a folder holding {', '.join(sets)}, got {root}"
                                + ("" if root.exists() else " (it does not exist)"))
    files: list[Path] = []
    for name in sets:
        folder = root / name
        if not folder.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise FileNotFoundError(f"expected a training set folder {folder}, found only "
                                    f"{found or 'no folders'} in {root}")
        images = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
        if not images:
            raise FileNotFoundError(f"no images in {folder}: expected the training images "
                                    f"of {name}")
        files += images
    return files


def load_sr_images(root: str | Path, sets: Sequence[str] = TRAIN_SETS) -> SRImages:
    """Decode every training image once, as RGB uint8 (grayscale files become 3 equal planes,
    marked gray by the mode they were decoded from)."""
    root = Path(root)
    files = list_sr_images(root, sets)
    images, gray = [], []
    for path in files:
        img = open_image(path)
        gray.append(img.mode in GRAY_MODES)
        images.append(image_tensor(img))
    return SRImages([p.relative_to(root).as_posix() for p in files], images, gray)


# Pillow modes of one gray channel, as resnets.tasks.upscale reads them (LA: its alpha dropped)
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")


def holdout(names: Sequence[str], count: int, seed: int) -> list[str]:
    """``count`` names chosen by a seeded permutation, in sorted order: the validation images."""
    if not 0 <= count < len(names):
        raise ValueError(f"expected fewer validation images than the {len(names)} training "
                         f"images and at least 0, got {count}")
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed))
    return sorted(names[i] for i in order[:count].tolist())


def patch_size_for(patch_size: int, scale: int) -> int:
    """The HR patch side at ``scale``: ``patch_size`` rounded down to a multiple of the scale
    (96 serves x2, x3 and x4 unchanged: LR patches of 48, 32 and 24 pixels)."""
    side = patch_size - patch_size % scale
    if side < scale:
        raise ValueError(f"patch size {patch_size} is smaller than the scale {scale}")
    return side


class PatchSampler:
    """Random (LR, HR) uint8 patch pairs from images in memory.

    An image is drawn with probability proportional to its number of pixels, so every pixel
    of the pool is equally likely to be seen; images smaller than the patch are left out
    (``excluded`` names them). One scale per batch (the EDSR upsamplers differ per scale);
    the trainer cycles through the scales. ``augment`` is one of :data:`AUGMENTS`.
    """

    def __init__(self, data: SRImages, patch_size: int, scales: Sequence[int],
                 augment: str = "dihedral") -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
        self.scales = tuple(scales)
        self.patch_size = patch_size
        self.augment = augment
        need = max(patch_size_for(patch_size, s) for s in self.scales)
        fits = [min(img.shape[-2:]) >= need for img in data.images]
        self.excluded = [n for n, ok in zip(data.names, fits, strict=True) if not ok]
        self.names = [n for n, ok in zip(data.names, fits, strict=True) if ok]
        self.images = [img for img, ok in zip(data.images, fits, strict=True) if ok]
        if not self.images:
            raise ValueError(f"no training image is at least {need}x{need} pixels: use a "
                             f"smaller patch size (got {patch_size})")
        self.weights = torch.tensor([img.shape[-2] * img.shape[-1] for img in self.images],
                                    dtype=torch.float64)

    def hr_patches(self, batch: int, scale: int, generator: torch.Generator) -> torch.Tensor:
        """``(batch, 3, P, P)`` uint8 random crops, each flipped/rotated as ``augment`` says."""
        side = patch_size_for(self.patch_size, scale)
        which = torch.multinomial(self.weights, batch, replacement=True, generator=generator)
        corner = torch.rand(batch, 2, generator=generator, dtype=torch.float64)
        transform = self._transforms(batch, generator)
        patches = []
        for i, t, (u, v) in zip(which.tolist(), transform.tolist(), corner.tolist(),
                                strict=True):
            img = self.images[i]
            top = int(u * (img.shape[-2] - side + 1))
            left = int(v * (img.shape[-1] - side + 1))
            patches.append(dihedral(img[:, top:top + side, left:left + side], t))
        return torch.stack(patches)

    def _transforms(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """One :func:`dihedral` index per patch (0 = unchanged, 4 = horizontal flip)."""
        if self.augment == "dihedral":
            return torch.randint(0, 8, (batch,), generator=generator)
        if self.augment == "flip":
            return 4 * torch.randint(0, 2, (batch,), generator=generator)
        return torch.zeros(batch, dtype=torch.int64)

    def sample(self, batch: int, scale: int, generator: torch.Generator,
               device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lr, hr)`` uint8 batches: LR is MATLAB-style bicubic of the uint8 HR patches,
        made on ``device`` (default: the CPU): on a GPU the float64 bicubic of a batch runs
        there instead of on the CPU between steps, with the same uint8 result."""
        if scale not in self.scales:
            raise ValueError(f"this sampler serves scales {list(self.scales)}, got {scale}")
        hr = self.hr_patches(batch, scale, generator)
        if device is not None:
            hr = hr.to(device)
        return downscale(hr, scale), hr


def dihedral(x: torch.Tensor, t: int) -> torch.Tensor:
    """One of the 8 flips/rotations of a square ``(..., H, W)`` image: ``t % 4`` quarter
    turns, then a horizontal flip when ``t >= 4``."""
    x = torch.rot90(x, t % 4, dims=(-2, -1))
    return x.flip(-1) if t >= 4 else x
