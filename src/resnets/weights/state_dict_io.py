"""Reading checkpoints without running their code, and cleaning their state dicts.

Torch files (``.pth .pt .th .tar .bin .ckpt``) load with ``torch.load(weights_only=True,
map_location="cpu")``: tensors and plain data only, so a pickle carrying code is refused
before any of it runs, and tensors saved on a GPU load on a CPU-only machine.
``.safetensors`` files hold nothing but tensors. Cleaning unwraps the usual containers
(``state_dict``, ``model``, ``model_ema``) and strips the prefixes that DataParallel / DDP
(``module.``) and ``torch.compile`` (``_orig_mod.``) add to every key.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_output

TORCH_SUFFIXES = (".pth", ".pt", ".th", ".tar", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
CONTAINER_KEYS = ("state_dict", "model", "model_ema", "state_dict_ema")  # in order of preference
EMA_FIRST = ("model_ema", "state_dict_ema", "state_dict", "model")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
WRAPPER_KEYS = ("n_averaged",)  # torch.optim.swa_utils.AveragedModel's counter, not a weight


@dataclass
class Checkpoint:
    """A cleaned state dict and what else the file says about it."""

    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)  # safetensors metadata, or the
    # container's plain entries (``best_prec1``, ``epoch``)


def require_weights_file(path: Path, expected: str = "a .safetensors, .pt or .pth file"
                         ) -> None:
    """``path`` must be a file: a folder is said to be one, with what was ``expected`` (and
    the weights file of a run folder, when it holds one); anything else is not found."""
    if path.is_dir():
        weights = path / "model.safetensors"
        hint = f"; did you mean {weights}?" if weights.is_file() else ""
        raise IsADirectoryError(f"{path} is a folder, not a weights file: expected "
                                f"{expected}{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")


def read_raw(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """The file's content (safely) and, for safetensors, its metadata (JSON decoded)."""
    path = Path(path)
    require_weights_file(path)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        return _read_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path), {}
    raise ValueError(f"unknown checkpoint format {path.name!r}: expected "
                     f"{', '.join(TORCH_SUFFIXES)} or {SAFETENSORS_SUFFIX}")


def _read_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _forbidden_global(str(e))
        if found is None:  # PyTorch's text here is about weights_only, not the file
            raise ValueError(f"cannot read {path}: damaged or not a torch checkpoint (its "
                             "bytes are neither a torch zip nor a pickle of tensors)") from None
        raise ValueError(
            f"refusing to load {path}: it holds Python objects, not just tensors ({found}), "
            "and unpickling it could run code. If you trust its source, load it yourself "
            "and save only its state_dict") from None
    except PermissionError:
        raise
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, TypeError) as e:
        # the weights-only unpickler reports garbage input with assorted error types
        raise ValueError(f"cannot read {path}: truncated, damaged or not a torch checkpoint "
                         f"({_first_line(e) or type(e).__name__})") from None


def _forbidden_global(message: str) -> str | None:
    """What the weights-only unpickler refused, from its message; None if it refused
    nothing (the file is just broken)."""
    match = re.search(r"GLOBAL (\S+) was not an allowed global", message)
    if match:
        return f"a reference to {match.group(1)}"
    if "WeightsUnpickler error" in message:
        what = message.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        # an opcode the unpickler does not know: bytes that are not a pickle at all (text,
        # garbage), not an object it refused
        return None if what.startswith("Unsupported operand") else what
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else ""


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a mapping)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: truncated, damaged or not a safetensors file "
                         f"({_first_line(e)})") from None
    from .records import decode_metadata

    return tensors, decode_metadata(raw_meta)


def extract_state_dict(obj: Any, ema: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state dict inside a checkpoint, and the plain entries of its container.

    Containers are unwrapped (nested ones too): ``state_dict``, ``model``, ``model_ema``,
    ``state_dict_ema``; ``ema=True`` prefers the EMA weights when both are there. A
    container's ``classes`` and ``preprocess`` come along, and its ``config``'s ``model``
    name as ``model``: a ``resnets train`` checkpoint (``best.pt``, ``last.pt``) says what
    its weights are, as its ``model.safetensors`` does.
    """
    order = EMA_FIRST if ema else CONTAINER_KEYS
    extras: dict[str, Any] = {}
    for _ in range(4):
        if not isinstance(obj, Mapping):
            raise ValueError(f"expected a state dict (names -> tensors), got a "
                             f"{type(obj).__name__}")
        key = next((k for k in order if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        extras.update({k: v for k, v in obj.items() if k not in extras and (
            isinstance(v, (str, int, float, bool)) or k in ("classes", "preprocess"))})
        config = obj.get("config")
        if isinstance(config, Mapping) and isinstance(config.get("model"), str):
            extras.setdefault("model", config["model"])
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict (names -> tensors), got a {type(obj).__name__}")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors or not obj:
        found = ", ".join(map(str, not_tensors[:6])) if obj else "an empty mapping"
        raise ValueError(f"expected a state dict or a checkpoint holding one under "
                         f"{', '.join(order)}; found entries that are not tensors: {found}")
    return dict(obj), extras


def strip_prefixes(key: str) -> str:
    """``module._orig_mod.layer1.0.conv1.weight`` -> ``layer1.0.conv1.weight``."""
    while key.startswith(WRAPPER_PREFIXES):
        for prefix in WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
    return key


def clean_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without wrapper prefixes; wrapper-only entries dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = strip_prefixes(key)
        if name in WRAPPER_KEYS:
            continue
        if name in out:
            raise ValueError(f"two keys become {name!r} once the module./_orig_mod. prefixes "
                             "are stripped: the checkpoint mixes wrapped and plain weights")
        out[name] = value
    return out


def nonfinite_tensors(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or infinity (a diverged run's weights)."""
    return [k for k, v in state_dict.items()
            if v.is_floating_point() and v.device.type != "meta" and not torch.isfinite(v).all()]


def load_checkpoint(path: str | os.PathLike[str], ema: bool = False) -> Checkpoint:
    """Read a checkpoint file safely and return its cleaned state dict."""
    raw, meta = read_raw(path)
    state_dict, extras = extract_state_dict(raw, ema=ema)
    return Checkpoint(clean_state_dict(state_dict), {**extras, **meta})


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str],
                     metadata: Mapping[str, Any] | None = None) -> Path:
    """Write tensors (contiguous, on the CPU, unshared) to ``path`` atomically; metadata
    values that are not strings are stored as JSON."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != SAFETENSORS_SUFFIX:
        raise ValueError(f"expected an output path ending in {SAFETENSORS_SUFFIX}, got "
                         f"{path.name!r}")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    with atomic_output(path, make_parents=True) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path
