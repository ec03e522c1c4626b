"""Small synthetic ImageFolder trees for fast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(root: Path, classes=("a", "b", "c"), per_class=(24, 6), size=16,
                seed: int = 0) -> Path:
    """``root/train/<c>`` and ``root/test/<c>`` with class-dependent brightness + noise."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class, strict=True):
        for k, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = 40 + 80 * k
                arr = np.clip(rng.normal(base, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i:03d}.png")
    return root


def read_weights(path) -> tuple[dict, dict]:
    """The tensors and metadata of a weights file (through the package's one reader)."""
    from resnets.weights.state_dict_io import load_checkpoint

    checkpoint = load_checkpoint(path)
    return checkpoint.state_dict, checkpoint.metadata
