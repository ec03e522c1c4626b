"""The data side of training: which dataset, which split, which batches, in which order.

Small datasets live in memory as uint8 and are augmented per batch on the training device
(:class:`MemoryBatches`); large ones stream through a ``DataLoader``
(:class:`StreamBatches`). Both shuffle with a generator seeded by (seed, epoch), so the
data order of any epoch is known without replaying the epochs before it, and both shard
the data across DDP ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.augment import cutout, normalize, random_crop_flip
from ..data.cifar import is_cifar_python, load_cifar_python
from ..data.folder import TensorImages, load_folder, scan_folder
from ..data.split import stratified_split
from ..weights.preprocessing import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
)
from .config import TrainConfig

IN_MEMORY_MAX_IMAGES = 200_000  # "auto": trees with more files stream from disk


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def split_dirs(root: str | Path) -> tuple[Path, Path | None]:
    """``root/train`` and ``root/test`` (or ``val``) when present, else ``root`` alone."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset not found: {root}")
    if (root / "train").is_dir():
        for name in ("test", "val"):
            if (root / name).is_dir():
                return root / "train", root / name
        return root / "train", None
    return root, None


def load_small(root: str | Path, train: bool, classes: list[str] | None, strict: bool
               ) -> TensorImages:
    """A small dataset in memory: CIFAR python files or an ImageFolder tree."""
    if is_cifar_python(root):
        return load_cifar_python(root, train)
    return load_folder(root, classes=classes, strict=strict)


def use_memory(cfg: TrainConfig, train_dir: Path) -> bool:
    if cfg.in_memory != "auto" or is_cifar_python(cfg.data):
        return cfg.in_memory != "no"
    return len(scan_folder(train_dir).paths) <= IN_MEMORY_MAX_IMAGES


class MemoryBatches:
    """Batches from a uint8 tensor dataset, augmented on the device, sharded per rank."""

    def __init__(self, data: TensorImages, batch_size: int, device: torch.device,
                 mean: tuple[float, ...], std: tuple[float, ...], train: bool,
                 crop_pad: int = 4, cutout_size: int = 0, rank: int = 0, world: int = 1,
                 dtype: torch.dtype = torch.float32) -> None:
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.mean, self.std = mean, std
        self.train = train
        self.crop_pad = crop_pad
        self.cutout_size = cutout_size
        self.rank, self.world = rank, world
        self.dtype = dtype

    def __len__(self) -> int:
        per_rank = self._per_rank()
        if self.train:
            return per_rank // self.batch_size
        return math.ceil(per_rank / self.batch_size)

    def _per_rank(self) -> int:
        n = len(self.labels)
        return n // self.world if self.train else math.ceil(n / self.world)

    def order(self, seed: int, epoch: int) -> torch.Tensor:
        """This rank's sample indices for ``epoch``: a seeded permutation, strided by rank."""
        n = len(self.labels)
        if not self.train:
            return torch.arange(n)[self.rank::self.world]
        g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        perm = torch.randperm(n, generator=g)
        return perm[self.rank::self.world][: self._per_rank()]

    def batches(self, seed: int, epoch: int, start: int = 0,
                generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(inputs, labels, indices)`` from batch ``start`` on."""
        order = self.order(seed, epoch)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            dev_idx = idx.to(self.device)
            x = self.images[dev_idx]
            if self.train:
                assert generator is not None
                x = random_crop_flip(x, self.crop_pad, generator)
            x = normalize(x, self.mean, self.std, self.dtype)
            if self.train and self.cutout_size > 0:
                x = cutout(x, self.cutout_size, generator)
            yield x, self.labels[dev_idx], idx


class _FileDataset(torch.utils.data.Dataset):
    """Files decoded on access; an unreadable file yields ``None`` (counted, skipped)."""

    def __init__(self, paths: list[Path], labels: list[int], transform, strict: bool) -> None:
        self.paths, self.labels, self.transform, self.strict = paths, labels, transform, strict

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from ..data.io import ImageReadError, read_rgb

        try:
            img = read_rgb(self.paths[i])
        except ImageReadError:
            if self.strict:
                raise
            return None
        return self.transform(img), self.labels[i], i


def _collate(items):
    kept = [it for it in items if it is not None]
    skipped = len(items) - len(kept)
    if not kept:
        return None, skipped
    x = torch.stack([k[0] for k in kept])
    y = torch.tensor([k[1] for k in kept])
    idx = torch.tensor([k[2] for k in kept])
    return (x, y, idx), skipped


def stream_preprocessing(cfg: TrainConfig) -> Preprocessing:
    """Evaluation preprocessing of streamed (ImageNet-style) data: resize to image_size /
    0.875, centre-crop image_size, ImageNet statistics."""
    return Preprocessing(resize=int(round(cfg.image_size / 0.875)), crop=cfg.image_size,
                         mean=IMAGENET_MEAN, std=IMAGENET_STD)


def stream_transforms(cfg: TrainConfig, train: bool):
    """torchvision transforms v2 for large datasets (ImageNet-style)."""
    from torchvision.transforms import v2

    if train:
        ops = [v2.RandomResizedCrop(cfg.image_size, antialias=True), v2.RandomHorizontalFlip()]
        if cfg.auto_augment == "trivial":
            ops.append(v2.TrivialAugmentWide())
        elif cfg.auto_augment == "randaugment":
            ops.append(v2.RandAugment())
    else:
        return stream_preprocessing(cfg).transforms()
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if cfg.random_erasing > 0:
        ops.append(v2.RandomErasing(cfg.random_erasing))
    return v2.Compose(ops)


class StreamBatches:
    """A ``DataLoader`` over image files with torchvision transforms, sharded per rank."""

    def __init__(self, paths: list[Path], labels: list[int], cfg: TrainConfig, train: bool,
                 device: torch.device, rank: int = 0, world: int = 1) -> None:
        self.dataset = _FileDataset(paths, labels, stream_transforms(cfg, train), cfg.strict)
        self.labels = torch.tensor(labels)
        self.batch_size, self.train, self.device = cfg.batch_size, train, device
        self.workers, self.rank, self.world = cfg.workers, rank, world
        self.skipped = 0

    def __len__(self) -> int:
        per_rank = len(self.dataset) // self.world if self.train else \
            math.ceil(len(self.dataset) / self.world)
        return per_rank // self.batch_size if self.train else math.ceil(per_rank / self.batch_size)

    def batches(self, seed: int, epoch: int, start: int = 0,
                generator: torch.Generator | None = None):
        n = len(self.dataset)
        if self.train:
            g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
            order = torch.randperm(n, generator=g)[self.rank::self.world][: n // self.world]
        else:
            order = torch.arange(n)[self.rank::self.world]
        order = order[start * self.batch_size:]
        sampler = order.tolist()
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.workers,
            collate_fn=_collate, drop_last=self.train, persistent_workers=False,
            generator=torch.Generator().manual_seed(epoch_seed(seed, epoch) + 1))
        for batch, skipped in loader:
            self.skipped += skipped
            if batch is None:
                continue
            x, y, idx = batch
            yield x.to(self.device, non_blocking=True), y.to(self.device), idx


@dataclass
class TrainData:
    """Everything the loop reads data from, built once from the config."""

    classes: list[str]
    preprocessing: Preprocessing
    in_memory: bool
    skipped: int                      # unreadable training images left out
    train: MemoryBatches | StreamBatches
    val: MemoryBatches | StreamBatches | None
    train_clean: MemoryBatches | None  # a fixed training subset, no augmentation
    test: MemoryBatches | StreamBatches | None
    class_counts: list[int]           # training images per class, before any split

    def fingerprint(self) -> dict:
        """What a resumed run checks to know it sees the same dataset: the class list and
        the image count of each class (cheap, and it catches renamed, added or removed
        classes and images)."""
        return {"classes": list(self.classes), "class_counts": list(self.class_counts)}


def build_data(cfg: TrainConfig, device: torch.device, rank: int = 0, world: int = 1
               ) -> TrainData:
    """The train/val(/clean-train/test) batches of ``cfg.data`` for this rank.

    Small datasets are decoded into memory (validation held out, stratified and seeded);
    large ones stream from disk. Errors name what is wrong before any training starts.
    """
    train_dir, test_dir = split_dirs(cfg.data)
    cifar = is_cifar_python(cfg.data)  # pickled CIFAR files: both splits come from cfg.data
    in_memory = use_memory(cfg, train_dir)
    if in_memory:
        full = load_small(cfg.data if cifar else train_dir, True, None, cfg.strict)
        classes = full.classes
        small = full.images.shape[-1] <= 64  # CIFAR-like: CIFAR statistics
        mean, std = (CIFAR_MEAN, CIFAR_STD) if small else (IMAGENET_MEAN, IMAGENET_STD)
        size = full.images.shape[-1]
        preprocessing = Preprocessing(resize=size, crop=size, mean=mean, std=std)
        train_idx, val_idx = stratified_split(full.labels, cfg.val_fraction, cfg.seed)
        skipped = len(full.skipped)
        counts = torch.bincount(full.labels, minlength=len(classes)).tolist()

        def batches(d, is_train):
            return MemoryBatches(d, cfg.batch_size, device, mean, std, is_train,
                                 cfg.crop_pad, cfg.cutout, rank if is_train else 0,
                                 world if is_train else 1)

        if cfg.subset_per_class:
            train_idx = per_class_subset(full.labels, train_idx, cfg.subset_per_class,
                                         cfg.seed)
        train = batches(full.subset(train_idx), True)
        val = batches(full.subset(val_idx), False) if len(val_idx) else None
        train_clean = None
        if cfg.train_eval_size:  # a fixed training subset evaluated without augmentation
            fixed = train_idx[torch.randperm(len(train_idx), generator=torch.Generator()
                                             .manual_seed(cfg.seed))[:cfg.train_eval_size]]
            train_clean = batches(full.subset(fixed.sort().values), False)
        test_data = None
        if test_dir is not None or cifar:
            test = load_small(cfg.data if cifar else test_dir, False, classes, cfg.strict)
            if cfg.test_limit and cfg.test_limit < len(test):
                n_cls = len(classes)
                keep = per_class_subset(test.labels, torch.arange(len(test)),
                                        max(1, cfg.test_limit // n_cls), cfg.seed)
                test = test.subset(keep)
            test_data = batches(test, False)
    else:
        index = scan_folder(train_dir)
        classes = index.classes
        skipped = 0
        labels = torch.tensor(index.labels)
        counts = torch.bincount(labels, minlength=len(classes)).tolist()
        train_idx, val_idx = stratified_split(labels, cfg.val_fraction, cfg.seed)
        preprocessing = stream_preprocessing(cfg)

        def stream(idx, is_train):
            return StreamBatches([index.paths[i] for i in idx],
                                 [index.labels[i] for i in idx], cfg, is_train, device,
                                 rank if is_train else 0, world if is_train else 1)

        if cfg.subset_per_class or cfg.train_eval_size:
            raise ValueError("subset_per_class and train_eval_size need an in-memory dataset")
        train_clean = None
        train = stream(train_idx.tolist(), True)
        val = stream(val_idx.tolist(), False) if len(val_idx) else None
        test_data = None
        if test_dir is not None:
            test_index = scan_folder(test_dir, classes=classes)
            test_data = StreamBatches(test_index.paths, test_index.labels, cfg, False,
                                      device)
    if len(train) == 0:
        raise ValueError(f"training set of {cfg.data} is smaller than one batch of "
                         f"{cfg.batch_size}: use a smaller batch size")
    return TrainData(classes, preprocessing, in_memory, skipped, train, val, train_clean,
                     test_data, counts)


def dataset_mismatch(saved: dict, now: dict, data: str) -> str | None:
    """Why the dataset at ``data`` (fingerprint ``now``) is not the one a run started on
    (``saved``), or None when it is the same."""
    old, new = list(saved["classes"]), list(now["classes"])
    if old != new:
        gone = [c for c in old if c not in new]
        added = [c for c in new if c not in old]
        parts = [f"missing {', '.join(gone[:5])}" if gone else "",
                 f"new {', '.join(added[:5])}" if added else "",
                 "same names in another order" if not gone and not added else ""]
        return (f"the classes of {data} differ from the run's ({'; '.join(p for p in parts if p)}"
                f"): the run's head has {len(old)} outputs for {', '.join(old[:10])}")
    counts = saved.get("class_counts")
    if counts is not None and list(counts) != list(now["class_counts"]):
        changed = [f"{c} {a} -> {b}" for c, a, b in
                   zip(old, counts, now["class_counts"], strict=True) if a != b]
        return (f"the training images of {data} differ from the run's (images per class: "
                f"{', '.join(changed[:5])}): the validation split would change")
    return None


def per_class_subset(labels: torch.Tensor, index: torch.Tensor, per_class: int,
                     seed: int) -> torch.Tensor:
    """The first ``per_class`` of each class from ``index`` in a seeded random order."""
    g = torch.Generator().manual_seed(seed + 1)
    shuffled = index[torch.randperm(len(index), generator=g)]
    keep = []
    for c in labels[index].unique().tolist():
        keep.append(shuffled[labels[shuffled] == c][:per_class])
    return torch.cat(keep).sort().values
