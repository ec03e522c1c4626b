"""Super-resolution weights: writing them with their architecture, and loading them through
the package's one reader (:func:`load_checkpoint`) and one loader
(:func:`load_state_dict_into`).

A file written by :func:`save_sr_weights` names its architecture and config in its metadata
(``resnets.sr``); a file without it (another tool's EDSR, a DataParallel checkpoint) needs
the model's name, and an EDSR's scales are then read from its upsampler keys.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..devices import resolve_device
from ..models.sr import (
    ARCHITECTURES,
    METADATA_KEY,
    SR_MODELS,
    architecture_of,
    build_sr,
    create_sr_model,
)
from .loading import load_state_dict_into
from .state_dict_io import load_checkpoint, save_safetensors

BUNDLED_SR_DIR = Path(__file__).resolve().parent / "bundled" / "sr"


def save_sr_weights(model: nn.Module, path: str | Path,
                    metadata: dict[str, Any] | None = None) -> Path:
    """The model's state_dict as safetensors with its architecture and config, atomically."""
    record = {"arch": architecture_of(model), "config": asdict(model.config)}
    return save_safetensors(model.state_dict(), path, {**(metadata or {}), METADATA_KEY: record})


def _scales_in(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """The scales an EDSR state_dict has upsamplers for (keys ``tail.x{s}.*``)."""
    return tuple(sorted({int(k.split(".")[1][1:]) for k in state if k.startswith("tail.x")}))


def load_sr_weights(path: str | Path, name: str | None = None,
                    device: str | torch.device = "cpu", allow_nonfinite: bool = False
                    ) -> nn.Module:
    """A model with weights from a file, in eval mode (see the module docstring)."""
    path = Path(path)
    checkpoint = load_checkpoint(path)
    state, meta = checkpoint.state_dict, checkpoint.metadata
    record = meta.get(METADATA_KEY)
    if record is not None and not isinstance(record, dict):
        raise ValueError(f"{path}: its {METADATA_KEY!r} metadata is not a JSON object naming "
                         "an architecture")
    if record is not None:
        arch = record.get("arch")
        if arch not in ARCHITECTURES:
            raise ValueError(f"{path}: unknown architecture {arch!r} in its metadata; expected "
                             f"one of {list(ARCHITECTURES)}")
        if name is not None and architecture_of(create_sr_model(name)) != arch:
            raise ValueError(f"{path} holds a {arch} network, not {name!r}: leave the model "
                             f"name out or give a {arch} model")
        config = record.get("config", {})
        if not isinstance(config, dict):
            raise ValueError(f"{path}: the {METADATA_KEY} metadata's config must be a mapping, "
                             f"got {type(config).__name__}")
        model = build_sr(arch, {}, config)
    elif name is None:
        raise ValueError(f"{path} has no {METADATA_KEY!r} metadata naming its architecture: "
                         f"give the model name (one of {', '.join(SR_MODELS)})")
    else:
        kwargs = {"scales": _scales_in(state)} if any(k.startswith("tail.x") for k in state) \
            else {}
        model = create_sr_model(name, **kwargs)
    load_state_dict_into(model, state, label=str(path), model_name=type(model).__name__,
                         allow_nonfinite=allow_nonfinite, keep_head=True)
    return model.to(resolve_device(device)).eval()


def bundled_sr_weights(name: str | None = None) -> Path | None:
    """The bundled weights file of ``name`` (or the default bundled network), if shipped.

    Files are named ``<model>_x<scales>.safetensors`` beside a provenance JSON record.
    """
    files = sorted(BUNDLED_SR_DIR.glob("*.safetensors"))
    if name is not None:
        files = [f for f in files if f.stem.rsplit("_x", 1)[0] == name]
    return files[0] if files else None


def get_sr_model(name: str | None = None, weights: str | Path | None = None,
                 device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """The model a command runs, with a label: a weights file, the bundled network (no
    ``name`` or a bundled model's name), or the bicubic baseline (``"bicubic"``)."""
    dev = resolve_device(device)
    if weights is not None:
        model = load_sr_weights(weights, name, dev)
        return model, name or Path(weights).stem
    if name == "bicubic":
        return create_sr_model(name).to(dev).eval(), name
    if name is not None:
        create_sr_model(name)  # an unknown name fails here with the list of known ones
    bundled = bundled_sr_weights(name)
    if bundled is None:
        what = f"for {name!r} " if name else ""
        raise ValueError(f"no bundled super-resolution weights {what}yet: use the bicubic "
                         "model, or a model name with a weights file")
    return load_sr_weights(bundled, None, dev), f"{bundled.stem} (bundled)"
