"""A stratified, seeded hold-out split: validation is for model selection, test only reports."""

from __future__ import annotations

import torch


def stratified_split(labels: torch.Tensor, fraction: float, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, val)`` with ``fraction`` of every class in val (at least one each)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return torch.arange(len(labels)), torch.empty(0, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = max(1, round(len(idx) * fraction))
        if n_val >= len(idx):
            raise ValueError(f"class {c} has {len(idx)} image(s): too few to hold out "
                             f"{fraction:.0%} for validation")
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values
