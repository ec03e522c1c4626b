"""ImageFolder trees (``root/<class>/<image>``) and their in-memory uint8 cache.

Small datasets such as CIFAR are decoded once into a ``(N, 3, H, W)`` uint8 tensor saved
next to the user's cache (``$RESNETS_CACHE`` or ``~/.cache/resnets``), then trained from
memory. The cache is keyed by the file list, sizes, modification times (ns) and inodes, so a
changed folder is re-decoded.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..files import atomic_output
from .io import ImageReadError, is_image_file, read_rgb


@dataclass
class FolderIndex:
    """The files of an ImageFolder tree: paths, integer labels and sorted class names."""

    root: Path
    paths: list[Path]
    labels: list[int]
    classes: list[str]


@dataclass
class TensorImages:
    """A decoded dataset: uint8 images ``(N, 3, H, W)``, int64 labels, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    skipped: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> TensorImages:
        return TensorImages(self.images[index], self.labels[index], self.classes, [])


def scan_folder(root: str | Path, classes: list[str] | None = None) -> FolderIndex:
    """List ``root/<class>/*`` images. ``classes`` (from a training split) must match."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root} (expected root/<class>/*.jpg)")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise ValueError(f"no class folders in {root}: expected root/<class>/<image> "
                         "(the ImageFolder layout)")
    if classes is not None and found != list(classes):
        missing = sorted(set(classes) - set(found))
        extra = sorted(set(found) - set(classes))
        raise ValueError(f"class folders of {root} do not match the training classes: "
                         f"missing {missing}, unexpected {extra}")
    paths, labels = [], []
    for label, name in enumerate(found):
        files = sorted(p for p in (root / name).iterdir() if p.is_file() and is_image_file(p))
        if not files:
            raise ValueError(f"class folder {root / name} has no images")
        paths += files
        labels += [label] * len(files)
    return FolderIndex(root, paths, labels, found)


def default_cache_dir() -> Path:
    return Path(os.environ.get("RESNETS_CACHE", Path.home() / ".cache" / "resnets"))


def _cache_key(index: FolderIndex) -> str:
    h = hashlib.sha256(str(index.root.resolve()).encode())
    for p in index.paths:
        # nanosecond mtime and inode: a rewrite within the same second at the same size, or
        # a replacement by rename, is noticed
        st = p.stat()
        h.update(f"{p.relative_to(index.root)}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}\n"
                 .encode())
    return h.hexdigest()[:16]


class MixedSizesError(ValueError):
    """Images of different sizes asked to be kept at their own size."""


def fit_square(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` (antialiased bilinear) and keep the centre
    ``size`` x ``size``: how a photo of any shape is stored once for training."""
    if img.shape[-2:] == (size, size):
        return img
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(TF.resize(img, size, antialias=True), size)


def decode_folder(index: FolderIndex, strict: bool = False,
                  image_size: int | None = None) -> TensorImages:
    """Decode every image, stored at ``image_size`` (:func:`fit_square`) or, without it, at
    their own common size. An unreadable file is skipped with a one-line warning naming it
    and the reason (``strict``: the error is raised); ``skipped`` keeps those lines."""
    images, labels, skipped = [], [], []
    for path, label in zip(index.paths, index.labels, strict=True):
        try:
            img = read_rgb(path)
        except ImageReadError as e:
            if strict:
                raise
            skipped.append(str(e))
            warnings.warn(str(e), stacklevel=2)
            continue
        images.append(img if image_size is None else fit_square(img, image_size))
        labels.append(label)
    if not images:
        raise ValueError(f"no readable images in {index.root}")
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) > 1:
        raise MixedSizesError(f"images in {index.root} have different sizes ({len(shapes)} "
                              f"shapes, e.g. {sorted(shapes)[:2]}): give an image size to "
                              "store them at")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) in {index.root}", stacklevel=2)
    return TensorImages(torch.stack(images), torch.tensor(labels), index.classes, skipped)


def load_folder(root: str | Path, classes: list[str] | None = None, strict: bool = False,
                cache_dir: str | Path | None = None, image_size: int | None = None
                ) -> TensorImages:
    """Scan, decode and cache an ImageFolder tree; a second call loads the cache.
    ``image_size``: store every image at that square size (:func:`fit_square`)."""
    index = scan_folder(root, classes)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"folder-{_cache_key(index)}-{image_size or 'native'}.safetensors"
    if path.exists():
        try:
            blob = load_file(path)
            meta_classes = blob["classes"].tolist()
            if len(meta_classes) == len(index.classes):
                return TensorImages(blob["images"], blob["labels"], index.classes, [])
        except Exception:  # a damaged cache is rebuilt, never trusted
            pass
    data = decode_folder(index, strict=strict, image_size=image_size)
    if not data.skipped:  # a cache must reflect the folder; partial decodes are not cached
        with atomic_output(path, make_parents=True) as tmp:
            save_file({"images": data.images.contiguous(), "labels": data.labels,
                       "classes": torch.arange(len(data.classes))}, str(tmp))
    return data
