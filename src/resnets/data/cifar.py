"""The official CIFAR-10/100 "python version" (pickled ``data_batch_*``, ``test_batch``).

Those files are pickles; they are read with an unpickler that only admits the numpy types
they contain, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .folder import TensorImages

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        obj = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def is_cifar_python(root: str | Path) -> bool:
    root = Path(root)
    return (root / "test_batch").exists() or (root / "train").is_file()


def load_cifar_python(root: str | Path, train: bool) -> TensorImages:
    """Load ``cifar-10-batches-py`` (or ``cifar-100-python``) as uint8 tensors."""
    root = Path(root)
    if (root / "meta").exists() and (root / "train").is_file():  # CIFAR-100
        files = [root / ("train" if train else "test")]
        meta = _unpickle(root / "meta")
        names, key = meta["fine_label_names"], "fine_labels"
    else:
        files = (sorted(root.glob("data_batch_*")) if train else [root / "test_batch"])
        meta = _unpickle(root / "batches.meta")
        names, key = meta["label_names"], "labels"
    if not files or not all(f.exists() for f in files):
        raise FileNotFoundError(f"CIFAR python files not found in {root} (expected "
                                "data_batch_1..5 and test_batch, or train/test for CIFAR-100)")
    images, labels = [], []
    for f in files:
        batch = _unpickle(f)
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[key])
    classes = [n.decode() if isinstance(n, bytes) else n for n in names]
    return TensorImages(torch.from_numpy(np.concatenate(images)), torch.tensor(labels),
                        classes, [])
