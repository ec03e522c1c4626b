"""Pooled features of a classifier for a folder of images: embeddings for similarity search
and linear probes.

The features are the ``pre_logits`` vector (global average pool of the last stage, what
``fc`` takes; :class:`resnets.export.graphs.PooledFeatures`), computed by any backend
predict takes. Files are read like predict reads them: an unreadable file becomes one error
line and the others are still embedded.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.image_file import collect_images
from ..data.prefetch import Prefetch
from ..data.stream import image_batches
from ..export.backends import runtime_owns_cores
from ..export.graphs import PooledFeatures
from ..files import atomic_output
from ..weights.classifier import Classifier, load_classifier
from .classify import classifier_backend


@dataclass
class Embeddings:
    """Row ``i`` of ``features`` belongs to ``paths[i]``."""

    features: np.ndarray  # (N, D) float32
    paths: list[str]
    errors: list[str]     # "path: reason", one per unreadable file
    model: str
    backend: str

    def to_dict(self) -> dict:
        """Everything but the array: what the ``.json`` beside the ``.npy`` holds."""
        return {"model": self.model, "backend": self.backend, "count": len(self.paths),
                "dim": int(self.features.shape[1]), "paths": self.paths,
                "errors": self.errors}


@torch.no_grad()
def embed_with(clf: Classifier, paths: list[Path], batch_size: int = 64,
               backend: str = "auto", calibration: str | Path | None = None,
               workers: int | None = None, prefetched: Prefetch | None = None) -> Embeddings:
    """Pooled features of every readable file in ``paths``, on ``backend``, read as
    :func:`resnets.tasks.classify.predict_with` reads them: decoding starts while the
    backend loads, and ``prefetched`` holds files a child process decoded ahead."""
    features = PooledFeatures(clf.model).eval()
    device = next(clf.model.parameters()).device
    rows: list[np.ndarray] = []
    kept: list[str] = []
    errors: list[str] = []
    batches = image_batches(paths, clf.preprocessing, batch_size, workers,
                            prefetched=prefetched)

    def readable() -> Iterator[torch.Tensor]:
        for batch in batches:
            errors.extend(batch.errors)
            if batch.images is None:
                continue
            kept.extend(str(p) for p in batch.paths)
            yield batch.images.to(device)

    with contextlib.closing(batches):
        run = classifier_backend(clf, backend,
                                 calibration if calibration is not None else paths,
                                 model=features)
        with runtime_owns_cores(run.kind):
            for out in run.map(readable()):
                rows.append(out.float().cpu().numpy())
    dim = features.num_features or (rows[0].shape[1] if rows else 0)
    array = np.concatenate(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    return Embeddings(array.astype(np.float32, copy=False), kept, errors, clf.name,
                      run.kind)  # what ran: after a fallback, not what was asked


def embed(images: list[str | Path] | str | Path, source: str | Path | None = None,
          model: str | None = None, batch_size: int = 64, device: str = "cpu",
          backend: str = "auto") -> Embeddings:
    """:func:`embed_with` for image files or folders, with the classifier ``source`` and
    ``model`` name what :func:`resnets.load_classifier` takes (default: bundled ResNet-56)."""
    if isinstance(images, (str, Path)):
        images = [images]
    paths = collect_images(list(images))
    if not paths:
        raise ValueError("no images given (expected image files or folders of images)")
    return embed_with(load_classifier(source, model, device=device), paths, batch_size,
                      backend)


def write_embeddings(embeddings: Embeddings, path: str | Path) -> tuple[Path, Path]:
    """The features as ``path`` (``.npy``, float32 ``(N, D)``) and, beside it, a ``.json``
    with the paths in row order, the model, backend and errors; both written atomically."""
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"embeddings are written as a .npy file, got {path.name!r}")
    index = path.with_suffix(".json")
    # the array first: an unwritable place is reported by the name the user gave
    with atomic_output(path) as tmp, atomic_output(index) as tmp_index:
        with open(tmp, "wb") as f:
            np.save(f, embeddings.features)
        tmp_index.write_text(json.dumps(embeddings.to_dict(), indent=1) + "\n")
    return path, index
