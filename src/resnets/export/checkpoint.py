"""Loading weights files into registry models, with errors that say what does not fit.

Accepted files: ``.safetensors`` (its metadata is kept: ``resnets train`` records the
preprocessing there), or a ``torch.save`` file holding a state dict, possibly nested under
``"state_dict"``, ``"model"`` or ``"model_state_dict"`` (training checkpoints).
``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) key prefixes are removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..registry import create_model, get_spec, list_models


def read_weights_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a weights file keyed as a ``state_dict``, and its metadata.

    One reader for the whole package: :func:`resnets.weights.checkpoint.load_checkpoint`
    (safe loading, container unwrapping, prefix cleaning)."""
    from ..weights.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    if not ck.state_dict:
        raise ValueError(f"{path} holds no state dict (expected a mapping of names to tensors)")
    return ck.state_dict, ck.metadata


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, keyed as the model's ``state_dict``."""
    return read_weights_file(path)[0]


def file_normalization(path: str | Path
                       ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The (mean, std) a weights file records (``resnets train``'s ``preprocess``), if any."""
    pre = read_weights_file(path)[1].get("preprocess")
    if isinstance(pre, dict) and "mean" in pre and "std" in pre:
        return tuple(pre["mean"]), tuple(pre["std"])
    return None


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def guess_architecture(state: dict[str, torch.Tensor]) -> str | None:
    """The registered model whose parameter names and shapes match ``state``, if any.

    The classifier is ignored (weights fine-tuned to other class counts still match). Models
    are built on the meta device, so the search allocates no memory.
    """
    want = {k: s for k, s in _shapes(state).items() if not k.startswith("fc.")}
    stem = want.get("conv1.weight", ())
    family = "cifar" if len(stem) == 4 and stem[-1] == 3 else "imagenet"  # 3x3 or 7x7 stem
    for name in list_models():
        if get_spec(name).family != family:
            continue
        with torch.device("meta"):
            model = create_model(name)
        have = {k: s for k, s in _shapes(model.state_dict()).items() if not k.startswith("fc.")}
        if have == want:
            return name
    return None


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path,
               name: str = "the model") -> nn.Module:
    """Load ``state`` into ``model`` strictly; a mismatch names the differences in one line."""
    own = _shapes(model.state_dict())
    found = _shapes(state)
    # old checkpoints lack BN's step counters, which inference does not use
    missing = [k for k in own if k not in found and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in found if k not in own]
    wrong = [k for k in own if k in found and own[k] != found[k]]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: file {list(found[k])}, "
                         f"model {list(own[k])})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        guess = guess_architecture(state)
        hint = (f"; the file looks like {guess}: pass --model {guess}" if guess and guess != name
                else "; was it saved from another architecture or with other options?")
        raise ValueError(f"weights {source} do not fit {name}: {', '.join(parts)}{hint}")
    model.load_state_dict(state, strict=False)  # every key checked above
    return model


def load_model(name: str, weights: str | Path | None = None, **kwargs) -> nn.Module:
    """``create_model(name, **kwargs)`` in eval mode, with ``weights`` loaded when given.

    The class count is taken from the file's classifier unless ``num_classes`` is passed.
    """
    if weights is None:
        return create_model(name, **kwargs).eval()
    state = read_state_dict(weights)
    if "num_classes" not in kwargs and "fc.weight" in state:
        kwargs["num_classes"] = state["fc.weight"].shape[0]
    model = create_model(name, **kwargs)
    return load_state(model, state, weights, name).eval()
