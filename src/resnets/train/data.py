"""The data side of training: which dataset, which split, which batches, in which order.

A dataset whose decoded images fit in memory lives there as uint8, each image stored once
(at its own size when all share one square size, as CIFAR; otherwise shorter side resized
and the centre kept, at ``image_size / 0.875``), and is augmented per batch on the
training device (:class:`MemoryBatches`); a larger one streams through a ``DataLoader``
(:class:`StreamBatches`). The choice is made on decoded bytes against available memory.
Both paths give the same :class:`Preprocessing` record, and both shuffle with a generator
seeded by (seed, epoch), so the data order of any epoch is known without replaying the
epochs before it, and both shard the data across DDP ranks.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.augment import (
    center_crop,
    cutout,
    normalize,
    random_crop_flip,
    random_resized_crop_flip,
)
from ..data.cifar import is_cifar_python, load_cifar_python
from ..data.folder import FolderIndex, MixedSizesError, TensorImages, load_folder, scan_folder
from ..data.io import ImageReadError, read_size
from ..data.split import stratified_split
from ..models.registry import get_spec
from ..weights.preprocessing import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
)
from .config import TrainConfig

MEMORY_SHARE = 0.5  # "auto": in memory when decoded images take at most this share of RAM
CROP_RATIO = 0.875  # stored side = input side / 0.875 (torchvision's 224 of 256)
SIZE_SAMPLE = 64  # headers read to find the images' common size


def train_steps(images: int, batch_size: int) -> int:
    """Optimizer steps an epoch: full batches only, but a training set smaller than one
    batch is one step of all of it (batch norm needs at least two images)."""
    return images // batch_size or (1 if images >= 2 else 0)


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


@dataclass
class ImagePlan:
    """How images become network inputs: stored at ``store`` x ``store`` (None: their own
    size, all equal), fed at ``side`` x ``side`` (random crops in training, the centre in
    evaluation), normalised with ``mean``/``std``; ``why`` says where each came from."""

    side: int
    store: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    why: str

    @property
    def stored_side(self) -> int:
        return self.store or self.side

    def preprocessing(self) -> Preprocessing:
        """The evaluation record, identical for in-memory and streamed training."""
        return Preprocessing(resize=self.stored_side, crop=self.side, mean=self.mean,
                             std=self.std)


Stats = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std)


def normalization(cfg: TrainConfig, saved: Stats | None = None
                  ) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """Statistics that follow the model: the pretrained weights' own, else ImageNet's for an
    ImageNet architecture and CIFAR-10's for a CIFAR one (never the image size). ``saved``
    (a resumed run): those the run started with, whatever the pretrained source says now
    (moved, deleted or offline, it would fall back to the family's)."""
    if saved is not None:
        return tuple(saved[0]), tuple(saved[1]), "the run's statistics, as it started"
    if cfg.pretrained:
        from ..weights.classifier import load_classifier

        try:
            pre = load_classifier(cfg.pretrained, cfg.model, progress=False).preprocessing
            return pre.mean, pre.std, "the pretrained weights' statistics"
        except (ValueError, OSError):  # a backbone without a head: the family's below
            pass
    if get_spec(cfg.model).family == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD, "ImageNet statistics (an ImageNet architecture)"
    return CIFAR_MEAN, CIFAR_STD, "CIFAR-10 statistics (a CIFAR architecture)"


def common_size(paths: list[Path]) -> int | None:
    """The side all images share when a sample of their headers shows one square size."""
    if not paths:
        return None
    step = max(1, len(paths) // SIZE_SAMPLE)
    sizes = set()
    for path in paths[::step][:SIZE_SAMPLE]:
        try:
            sizes.add(read_size(path))
        except ImageReadError:
            continue  # reported when it is decoded
    if len(sizes) != 1:
        return None
    (w, h), = sizes
    return w if w == h else None


def plan_images(cfg: TrainConfig, native: int | None,
                saved_stats: Stats | None = None) -> ImagePlan:
    """Input side: ``image_size`` when given, else the images' common side, else the
    model's; stored larger (``side / 0.875``, for random resized crops) unless the images
    are kept at their own size or the model is a CIFAR net (pad-and-crop at the input
    side)."""
    spec = get_spec(cfg.model)
    mean, std, stats = normalization(cfg, saved_stats)
    if cfg.image_size is not None:
        side, why = cfg.image_size, f"image_size {cfg.image_size}"
    elif native is not None:
        side, why = native, f"the images' own {native} px"
    else:
        side = spec.input_size[-1]
        why = f"images of mixed sizes at {cfg.model}'s {side} px"
    if native == side and cfg.image_size is None:
        store = None
    elif spec.family == "cifar":
        store = side
    else:
        store = int(round(side / CROP_RATIO))
    return ImagePlan(side, store, mean, std, f"{why}, {stats}")


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), if known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def choose_memory(cfg: TrainConfig, n_images: int, plan: ImagePlan,
                  saved: bool | None = None) -> tuple[bool, str]:
    """In memory or streamed, and why: decoded bytes against available memory. ``saved``
    (a resumed run): the choice the run made when it started, which ``auto`` keeps."""
    side = plan.stored_side
    decoded = n_images * 3 * side * side
    what = f"{n_images:,} images at {side}x{side} = {_bytes(decoded)} decoded"
    if cfg.in_memory != "auto":
        return cfg.in_memory == "yes", f"{what}, in_memory={cfg.in_memory}"
    if saved is not None:
        return saved, f"{what}, as the run chose when it started"
    free = available_memory()
    if free is None:
        return True, f"{what}, available memory unknown"
    copies = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this node
    if copies > 1:  # each holds its own copy
        decoded *= copies
        what += f" in each of {copies} processes"
    fits = decoded <= MEMORY_SHARE * free
    relation = "within" if fits else "more than"
    return fits, f"{what}, {relation} {MEMORY_SHARE:.0%} of {_bytes(free)} available"


def _agree_on_memory(in_memory: bool, reason: str, device: torch.device) -> tuple[bool, str]:
    """Under DDP every rank decides ``auto`` from its own view of free memory (ranks on one
    node read it at different moments, nodes differ): they must share one pipeline (the
    streamed one skips unreadable batches with a collective the in-memory one has not), so
    all stream when any rank would."""
    flag = torch.tensor([int(in_memory)], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    if bool(flag) == in_memory:
        return in_memory, reason
    return False, f"{reason}, but another process has less free memory: every process streams"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class MemoryBatches:
    """Batches from a uint8 tensor dataset, augmented on the device, sharded per rank."""

    def __init__(self, data: TensorImages, batch_size: int, device: torch.device,
                 mean: tuple[float, ...], std: tuple[float, ...], train: bool,
                 crop_pad: int = 4, cutout_size: int = 0, rank: int = 0, world: int = 1,
                 dtype: torch.dtype = torch.float32, side: int | None = None,
                 crop_min_area: float = 0.08) -> None:
        """``side``: the network input; images stored larger get random resized crops in
        training and their centre in evaluation, images stored at ``side`` pad-and-crop."""
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
        self.side = side or data.images.shape[-1]
        self.crop_min_area = crop_min_area

    def __len__(self) -> int:
        per_rank = self._per_rank()
        if self.train:
            return train_steps(per_rank, self.batch_size)
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
                if x.shape[-1] == self.side:
                    x = random_crop_flip(x, self.crop_pad, generator)
                else:
                    x = random_resized_crop_flip(x, self.side, generator,
                                                 (self.crop_min_area, 1.0))
            else:
                x = center_crop(x, self.side)
            x = normalize(x, self.mean, self.std, self.dtype)
            if self.train and self.cutout_size > 0:
                x = cutout(x, self.cutout_size, generator)
            yield x, self.labels[dev_idx], idx


class _FileDataset(torch.utils.data.Dataset):
    """Files decoded on access; an unreadable file yields its message (counted, skipped).
    An item ``(i, seed)`` draws its random transform from ``seed`` alone, whichever worker
    reads it and whatever that worker read before (a resumed epoch replays the same crops)."""

    def __init__(self, paths: list[Path], labels: list[int], transform, strict: bool) -> None:
        self.paths, self.labels, self.transform, self.strict = paths, labels, transform, strict

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]):
        from ..data.io import read_rgb

        i, seed = item if isinstance(item, tuple) else (item, None)
        try:
            img = read_rgb(self.paths[i])
        except ImageReadError as e:
            if self.strict:
                raise
            return str(e)
        if seed is None:
            return self.transform(img), self.labels[i], i
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stream is left as it was
            torch.default_generator.manual_seed(seed)  # the CPU's only: transforms draw there
            return self.transform(img), self.labels[i], i


def _collate(items):
    kept = [it for it in items if not isinstance(it, str)]
    skipped = [it for it in items if isinstance(it, str)]
    if not kept:
        return None, skipped
    x = torch.stack([k[0] for k in kept])
    y = torch.tensor([k[1] for k in kept])
    idx = torch.tensor([k[2] for k in kept])
    return (x, y, idx), skipped


def stream_transforms(cfg: TrainConfig, plan: ImagePlan, train: bool):
    """torchvision transforms v2 for streamed images: the plan's preprocessing in
    evaluation; random resized crop and flip (plus the configured extras) in training."""
    from torchvision.transforms import v2

    if not train:
        return plan.preprocessing().transforms()
    ops = [v2.RandomResizedCrop(plan.side, scale=(cfg.crop_min_area, 1.0), antialias=True),
           v2.RandomHorizontalFlip()]
    if cfg.auto_augment == "trivial":
        ops.append(v2.TrivialAugmentWide())
    elif cfg.auto_augment == "randaugment":
        ops.append(v2.RandAugment())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(plan.mean, plan.std)]
    if cfg.random_erasing > 0:
        ops.append(v2.RandomErasing(cfg.random_erasing))
    return v2.Compose(ops)


class StreamBatches:
    """A ``DataLoader`` over image files with torchvision transforms, sharded per rank."""

    def __init__(self, paths: list[Path], labels: list[int], cfg: TrainConfig, plan: ImagePlan,
                 train: bool, device: torch.device, rank: int = 0, world: int = 1) -> None:
        self.dataset = _FileDataset(paths, labels, stream_transforms(cfg, plan, train),
                                    cfg.strict)
        self.labels = torch.tensor(labels)
        self.batch_size, self.train, self.device = cfg.batch_size, train, device
        self.workers, self.rank, self.world = cfg.workers, rank, world
        self.input_shape = (len(plan.mean), plan.side, plan.side)
        self.skipped = 0
        self.unreadable: set[str] = set()  # each unreadable file's message, once

    def __len__(self) -> int:
        per_rank = len(self.dataset) // self.world if self.train else \
            math.ceil(len(self.dataset) / self.world)
        if self.train:
            return train_steps(per_rank, self.batch_size)
        return math.ceil(per_rank / self.batch_size)

    def batches(self, seed: int, epoch: int, start: int = 0,
                generator: torch.Generator | None = None):
        """Yield ``(inputs, labels, indices)`` from batch ``start`` on. In training, a batch
        of unreadable files only comes as an empty batch: one batch for each of the
        sampler's, so the training loop's count stays its position (a checkpoint after it
        resumes at the next batch)."""
        n = len(self.dataset)
        if self.train:
            g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
            order = torch.randperm(n, generator=g)[self.rank::self.world][: n // self.world]
            # one augmentation seed per image and epoch, fixed before any worker starts
            seeds = torch.randint(0, 2**62, (n,), generator=g)
        else:
            order = torch.arange(n)[self.rank::self.world]
        order = order[start * self.batch_size:]
        sampler = (list(zip(order.tolist(), seeds[order].tolist(), strict=True))
                   if self.train else order.tolist())
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.workers,
            collate_fn=_collate, drop_last=self.train and len(order) >= self.batch_size,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(epoch_seed(seed, epoch) + 1))
        batches = iter(loader)
        try:
            for batch, skipped in batches:
                for message in skipped:  # one line per unreadable file, as in memory
                    warnings.warn(message, stacklevel=2)
                self.skipped += len(skipped)
                self.unreadable.update(skipped)
                if batch is None:
                    if self.train:
                        empty = torch.empty(0, dtype=torch.long)
                        yield (torch.empty(0, *self.input_shape, device=self.device),
                               empty.to(self.device), empty)
                    continue
                x, y, idx = batch
                yield x.to(self.device, non_blocking=True), y.to(self.device), idx
        finally:  # closed early (an error, a stop mid-epoch): the workers end now, not when
            del batches  # the garbage collector finds this generator


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
    reason: str = ""                  # in memory or streamed, and why; the images' sizes
    # training files per class before any split; None for CIFAR python files (classes only)
    class_counts: list[int] | None = field(default=None)

    def fingerprint(self) -> dict:
        """What a resumed run checks to know it sees the same dataset: the class list and
        the file count of each class (cheap, and it catches renamed, added or removed
        classes and images)."""
        return {"classes": list(self.classes), "class_counts": self.class_counts}

    @property
    def train_images(self) -> int:
        return len(self.train.labels)

    def skipped_images(self, world: int = 1) -> int:
        """Unreadable training images left out so far: found when decoding into memory or,
        streamed, when read (each file once, however many epochs read it). Under DDP
        (``world`` > 1; every rank calls it) each rank streams its own shard: the count is
        of the files any of them found."""
        streamed: set[str] = set()
        for part in (self.train, self.val):
            if isinstance(part, StreamBatches):
                streamed |= part.unreadable
        if world > 1:
            found: list = [None] * world
            torch.distributed.all_gather_object(found, streamed)
            streamed = set().union(*found)
        return self.skipped + len(streamed)


def load_small(root: str | Path, train: bool, classes: list[str] | None, strict: bool,
               image_size: int | None = None) -> TensorImages:
    """A dataset in memory: CIFAR python files or an ImageFolder tree, stored at
    ``image_size`` (None: the images' own size)."""
    if is_cifar_python(root):
        data = load_cifar_python(root, train)
        if image_size is not None and data.images.shape[-1] != image_size:
            from ..data.folder import fit_square

            data = TensorImages(fit_square(data.images, image_size), data.labels,
                                data.classes, data.skipped)
        return data
    return load_folder(root, classes=classes, strict=strict, image_size=image_size)


def build_data(cfg: TrainConfig, device: torch.device, rank: int = 0, world: int = 1,
               saved_in_memory: bool | None = None, saved_stats: Stats | None = None
               ) -> TrainData:
    """The train/val(/clean-train/test) batches of ``cfg.data`` for this rank.

    Datasets whose decoded images fit in memory are decoded there (validation held out,
    stratified and seeded); larger ones stream from disk (``saved_in_memory``: the choice a
    resumed run made at its start). Errors name what is wrong before any training starts.
    """
    train_dir, test_dir = split_dirs(cfg.data)
    cifar = is_cifar_python(cfg.data)  # pickled CIFAR files: both splits come from cfg.data
    if cifar:
        index, test_index = None, None
        plan = plan_images(cfg, 32, saved_stats)
        in_memory, reason = True, "CIFAR python files"
    else:
        index = scan_folder(train_dir)
        test_index = scan_folder(test_dir, index.classes) if test_dir is not None else None
        plan = plan_images(cfg, None if cfg.image_size else common_size(index.paths),
                           saved_stats)
        n = len(index.paths) + (len(test_index.paths) if test_index else 0)
        in_memory, reason = choose_memory(cfg, n, plan, saved_in_memory)
        if world > 1 and cfg.in_memory == "auto" and saved_in_memory is None:
            in_memory, reason = _agree_on_memory(in_memory, reason, device)
    if in_memory:
        data, plan = _memory_data(cfg, plan, train_dir, test_dir, cifar, device, rank, world,
                                  saved_stats)
    else:
        data = _stream_data(cfg, plan, index, test_index, device, rank, world)
    if index is not None:
        data.class_counts = torch.bincount(torch.tensor(index.labels, dtype=torch.long),
                                           minlength=len(index.classes)).tolist()
    data.reason = (f"{'in memory' if in_memory else 'streaming from disk'} ({reason}); "
                   f"input {plan.side} px from {plan.why}")
    if len(data.train) == 0:
        raise ValueError(f"training set of {cfg.data} has fewer than 2 images: batch norm "
                         "needs at least 2 per step")
    return data


def _memory_data(cfg: TrainConfig, plan: ImagePlan, train_dir: Path, test_dir: Path | None,
                 cifar: bool, device: torch.device, rank: int, world: int,
                 saved_stats: Stats | None = None) -> tuple[TrainData, ImagePlan]:
    try:
        full = load_small(cfg.data if cifar else train_dir, True, None, cfg.strict, plan.store)
    except MixedSizesError:  # the sampled headers agreed, the whole folder does not
        plan = plan_images(cfg, None, saved_stats)
        full = load_small(train_dir, True, None, cfg.strict, plan.store)
    classes = full.classes
    train_idx, val_idx = stratified_split(full.labels, cfg.val_fraction, cfg.seed)

    def batches(d, is_train):
        return MemoryBatches(d, cfg.batch_size, device, plan.mean, plan.std, is_train,
                             cfg.crop_pad, cfg.cutout, rank if is_train else 0,
                             world if is_train else 1, side=plan.side,
                             crop_min_area=cfg.crop_min_area)

    if cfg.subset_per_class:
        train_idx = per_class_subset(full.labels, train_idx, cfg.subset_per_class, cfg.seed)
    train = batches(full.subset(train_idx), True)
    val = batches(full.subset(val_idx), False) if len(val_idx) else None
    train_clean = None
    if cfg.train_eval_size:  # a fixed training subset evaluated without augmentation
        fixed = train_idx[torch.randperm(len(train_idx), generator=torch.Generator()
                                         .manual_seed(cfg.seed))[:cfg.train_eval_size]]
        train_clean = batches(full.subset(fixed.sort().values), False)
    test_data = None
    if test_dir is not None or cifar:
        test = load_small(cfg.data if cifar else test_dir, False, classes, cfg.strict,
                          plan.stored_side)
        if cfg.test_limit and cfg.test_limit < len(test):
            keep = per_class_subset(test.labels, torch.arange(len(test)),
                                    max(1, cfg.test_limit // len(classes)), cfg.seed)
            test = test.subset(keep)
        test_data = batches(test, False)
    return TrainData(classes, plan.preprocessing(), True, len(full.skipped), train, val,
                     train_clean, test_data), plan


def _stream_data(cfg: TrainConfig, plan: ImagePlan, index: FolderIndex,
                 test_index: FolderIndex | None, device: torch.device, rank: int, world: int
                 ) -> TrainData:
    if cfg.subset_per_class or cfg.train_eval_size:
        raise ValueError("subset_per_class and train_eval_size need an in-memory dataset")
    labels = torch.tensor(index.labels)
    train_idx, val_idx = stratified_split(labels, cfg.val_fraction, cfg.seed)

    def stream(paths, labels, is_train):
        return StreamBatches(paths, labels, cfg, plan, is_train, device,
                             rank if is_train else 0, world if is_train else 1)

    def part(idx):
        return [index.paths[i] for i in idx], [index.labels[i] for i in idx]

    train = stream(*part(train_idx.tolist()), True)
    val = stream(*part(val_idx.tolist()), False) if len(val_idx) else None
    test_data = None
    if test_index is not None:
        test_data = stream(test_index.paths, test_index.labels, False)
    return TrainData(index.classes, plan.preprocessing(), False, 0, train, val, None,
                     test_data)


def per_class_subset(labels: torch.Tensor, index: torch.Tensor, per_class: int,
                     seed: int) -> torch.Tensor:
    """The first ``per_class`` of each class from ``index`` in a seeded random order."""
    g = torch.Generator().manual_seed(seed + 1)
    shuffled = index[torch.randperm(len(index), generator=g)]
    keep = []
    for c in labels[index].unique().tolist():
        keep.append(shuffled[labels[shuffled] == c][:per_class])
    return torch.cat(keep).sort().values


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
    counts, now_counts = saved.get("class_counts"), now.get("class_counts")
    if counts is not None and now_counts is not None and list(counts) != list(now_counts):
        changed = [f"{c} {a} -> {b}" for c, a, b in zip(old, counts, now_counts, strict=True)
                   if a != b]
        return (f"the training images of {data} differ from the run's (images per class: "
                f"{', '.join(changed[:5])}): the validation split would change")
    return None
