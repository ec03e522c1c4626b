"""Super-resolution weights: writing them with their architecture, and loading them through
the package's one reader (:func:`load_checkpoint`) and one loader
(:func:`load_state_dict_into`).

A file written by :func:`save_sr_weights` names its architecture and config in its metadata
(``resnets.sr``); a file without it (another tool's EDSR, a DataParallel checkpoint) needs
the model's name, and an EDSR's scales are then read from its upsampler keys.
"""

from __future__ import annotations

import json
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


def bundled_sr_record(weights: Path) -> dict[str, Any]:
    """The provenance record beside a bundled weights file (``<stem>.json``), or ``{}``."""
    path = weights.with_suffix(".json")
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _benchmark_psnr(record: dict[str, Any]) -> dict[str, float]:
    """``{"Set5_x2": psnr, ...}`` from a record's ``benchmarks`` (the numbers its bundling
    measured on the matlab_ref images)."""
    scores = record.get("benchmarks")
    if not isinstance(scores, dict):
        return {}
    return {k: float(v["psnr"]) for k, v in scores.items()
            if isinstance(v, dict) and isinstance(v.get("psnr"), (int, float))}


def rank_by_quality(files: list[Path]) -> list[Path]:
    """Bundled weights files, best first: by mean PSNR over the benchmark entries (set and
    scale) that every ranked record measured; files without measurements last, by name."""
    scores = {f: _benchmark_psnr(bundled_sr_record(f)) for f in files}
    measured = [s for s in scores.values() if s]
    shared = set.intersection(*(set(s) for s in measured)) if measured else set()

    def quality(f: Path) -> float:
        own = scores[f]
        keys = shared or set(own)
        return sum(own[k] for k in keys) / len(keys) if own and keys else float("-inf")

    return sorted(sorted(files, key=lambda f: f.name), key=quality, reverse=True)


def bundled_sr_files() -> list[Path]:
    """Every bundled weights file, best first (:func:`rank_by_quality`)."""
    return rank_by_quality(sorted(BUNDLED_SR_DIR.glob("*.safetensors")))


def bundled_sr_weights(name: str | None = None) -> Path | None:
    """The bundled weights of ``name`` (a model name such as ``edsr_small``, or a bundled
    file's name such as ``edsr_small_x234``), or the best bundled network, if shipped.

    Files are named ``<model>_x<scales>.safetensors`` beside a provenance JSON record whose
    ``benchmarks`` (Set5/Set14 PSNR per scale) rank them: the default is the best measured.
    """
    files = bundled_sr_files()
    if name is not None:
        files = [f for f in files if name in (f.stem, f.stem.rsplit("_x", 1)[0])]
    return files[0] if files else None


def get_sr_model(name: str | None = None, weights: str | Path | None = None,
                 device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """The model a command runs, with a label: a weights file, a bundled network (no
    ``name``: the best one; or a bundled model's or file's name), or the bicubic baseline
    (``"bicubic"``)."""
    dev = resolve_device(device)
    if weights is not None:
        model = load_sr_weights(weights, name, dev)
        return model, name or Path(weights).stem
    if name == "bicubic":
        return create_sr_model(name).to(dev).eval(), name
    bundled = bundled_sr_weights(name)
    if name is not None and bundled is None:
        create_sr_model(name)  # an unknown name fails here with the list of known ones
    if bundled is None:
        what = f"for {name!r} " if name else ""
        raise ValueError(f"no bundled super-resolution weights {what}yet: use the bicubic "
                         "model, or a model name with a weights file")
    return load_sr_weights(bundled, None, dev), f"{bundled.stem} (bundled)"
