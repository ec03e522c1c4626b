"""Atomic checkpoints holding everything a bitwise-exact resume needs.

A checkpoint is written to a temporary file in the run folder, flushed to disk, then
renamed over the old one: a crash mid-write leaves the previous checkpoint intact.
Our own checkpoints contain only tensors and plain containers, so they load with
``weights_only=True``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(tmp_path)``, flush it to disk, then move it over ``path`` atomically."""
    from ..files import atomic_output

    with atomic_output(path, make_parents=True, fsync=True) as tmp:
        write(tmp)


def rng_states() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot load checkpoint {path}: {e}") from None


def open_run(run_dir: Path, resume: bool) -> dict | None:
    """The state to resume a run from (stale temporary files of a killed write removed),
    or ``None`` for a new run, which must not overwrite an existing one."""
    ckpt_path = run_dir / "last.pt"
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"nothing to resume: {ckpt_path} does not exist")
        for stale in run_dir.glob(".*.tmp*"):
            stale.unlink()
        return load_checkpoint(ckpt_path)
    if ckpt_path.exists():
        raise FileExistsError(f"{run_dir} already holds a run: pass --resume to continue it, "
                              "or choose another --out")
    return None


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict) -> None:
    """The model's ``state_dict`` as safetensors, atomically; metadata stored as JSON."""
    from ..weights.checkpoint import save_safetensors

    save_safetensors(model.state_dict(), path, metadata)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and decoded metadata of a weights file (safetensors or a torch state dict)."""
    from ..weights.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    return ck.state_dict, ck.metadata
