"""Image files to uint8 batches, decoded on worker threads while the caller runs the model.

Pillow's decoders and torch's resize release the GIL, so a few threads decode and resize
the next batches while the main thread runs inference on this one. Batches keep the order
of the files. A file that cannot be read becomes one error line (``path: reason``, from the
guarded reader) in the batch it belonged to; the others are still returned. Pixels a child
process decoded while this one started (:class:`resnets.data.prefetch.Prefetch`) are taken
as they are.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch

from ..weights.preprocessing import Preprocessing
from .io import ImageReadError, read_rgb, rgb_tensor
from .prefetch import Prefetch

MAX_WORKERS = 4  # decoding saturates well before this on small images; more steal the model's cores


@dataclass
class Batch:
    """Readable images of one stretch of the file list, resized and cropped, as uint8."""

    images: torch.Tensor | None          # (N, C, S, S) uint8; None when none was readable
    paths: list[Path]                    # one per image
    sizes: list[tuple[int, int]]         # each image's (height, width) as decoded
    errors: list[str] = field(default_factory=list)  # "path: reason", one per unreadable file


def default_workers() -> int:
    """Decoding threads: one per two cores (at least one, at most :data:`MAX_WORKERS`), the
    other cores left to the model. Measured on 2 cores (issue #17, 10,000 CIFAR JPEGs): one
    thread instead of two made ``resnets predict`` 2-3% faster; two threads decoding small
    images mostly wait for each other's GIL."""
    return max(1, min(MAX_WORKERS, (os.cpu_count() or 1) // 2))


def _load(paths: list[Path], start: int, pre: Preprocessing, reduced_decode: bool,
          prefetched: Prefetch | None) -> Batch:
    """One batch: ``paths`` are files ``start``, ``start + 1``, ... of the whole list."""
    images, kept, sizes, errors = [], [], [], []
    min_side = pre.resize if reduced_decode else None
    for i, p in enumerate(paths, start):
        pixels = prefetched.take(i, min_side) if prefetched is not None else None
        try:
            image = read_rgb(p, min_side=min_side) if pixels is None else rgb_tensor(pixels)
        except ImageReadError as e:
            errors.append(str(e))
            continue
        sizes.append((image.shape[-2], image.shape[-1]))
        images.append(pre.resize_crop(image))
        kept.append(p)
    return Batch(torch.stack(images) if images else None, kept, sizes, errors)


def image_batches(paths: list[Path], pre: Preprocessing, batch_size: int = 64,
                  workers: int | None = None, reduced_decode: bool = True,
                  prefetched: Prefetch | None = None) -> Generator[Batch, None, None]:
    """Batches of ``paths`` through ``pre.resize_crop``, in order, decoded ahead on
    ``workers`` threads (None: :func:`default_workers`; 0: in the calling thread). The
    threads start on the first batches at once, before the first is asked for, so that the
    caller can load its model meanwhile; ``close()`` the iterator to stop them early.

    ``reduced_decode`` lets JPEGs much larger than ``pre.resize`` decode at a reduced scale
    (:func:`resnets.data.io.open_image`). Every batch is stacked, so ``pre`` must give one
    size (a crop, or a resize of square images). ``prefetched``: pixels of these ``paths``
    decoded ahead by a child process, taken where they are what reading would give.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    chunks = [(paths[i:i + batch_size], i) for i in range(0, len(paths), batch_size)]
    workers = default_workers() if workers is None else workers
    batches = _batches(chunks, pre, workers, reduced_decode, prefetched)
    next(batches)  # runs it to its first yield: the threads have their first chunks
    return cast(Generator[Batch, None, None], batches)


def _batches(chunks: list[tuple[list[Path], int]], pre: Preprocessing, workers: int,
             reduced_decode: bool, prefetched: Prefetch | None
             ) -> Generator[Batch | None, None, None]:
    """:func:`image_batches`, after one ``None`` once the pipeline is filled."""
    if workers == 0:
        yield None
        for chunk, start in chunks:
            yield _load(chunk, start, pre, reduced_decode, prefetched)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="resnets-decode") as pool:
        pending: deque[Future[Batch]] = deque()
        ahead = iter(chunks)
        for chunk, start in ahead:  # fill the pipeline: one batch per worker, plus one
            pending.append(pool.submit(_load, chunk, start, pre, reduced_decode, prefetched))
            if len(pending) > workers:
                break
        try:
            yield None
            while pending:
                batch = pending.popleft().result()
                nxt = next(ahead, None)
                if nxt is not None:
                    pending.append(pool.submit(_load, *nxt, pre, reduced_decode, prefetched))
                yield batch
        except GeneratorExit:  # closed early: wait for the batches in hand only
            for future in pending:
                future.cancel()
            raise
