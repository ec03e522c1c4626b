"""Starting a training run from pretrained weights: load the backbone, fresh head."""

from __future__ import annotations

import warnings

from torch import nn


def load_pretrained_backbone(model: nn.Module, source: str, quiet: bool = False) -> None:
    """Load ``source`` (a weights file) into ``model``; a head of another shape is skipped."""
    from pathlib import Path

    import torch

    from .checkpoint import read_weights

    path = Path(source)
    if path.suffix == ".safetensors":
        state, _ = read_weights(path)
    else:
        if not path.exists():
            raise FileNotFoundError(f"pretrained weights not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("model_ema", "model", "state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
        state = {k.removeprefix("module.").removeprefix("_orig_mod."): v
                 for k, v in state.items()}
    own = model.state_dict()
    head = {k for k in state if k.startswith("fc.") and k in own and
            state[k].shape != own[k].shape}
    if head:
        state = {k: v for k, v in state.items() if k not in head}
        if not quiet:
            warnings.warn(f"classifier head re-initialised: the weights' fc has "
                          f"{next(iter(v.shape for k, v in own.items() if k == 'fc.weight'))} "
                          "targets of another shape", stacklevel=2)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in head]
    if missing or unexpected:
        raise ValueError(f"weights {source} do not fit {type(model).__name__}: missing "
                         f"{missing[:8]}, unexpected {unexpected[:8]}")
