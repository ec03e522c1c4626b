"""Non-finite is failure: a run whose loss turns NaN or infinite stops with the step and the
likely cause, and never writes NaN weights over a good checkpoint.

A step with a non-finite loss is skipped (no update, as fp16's gradient scaler skips a step
whose gradients overflow); after ``limit`` such steps in a row the run stops. Skipping covers
the buffers too: a training forward pass has already folded the bad batch into BatchNorm's
running statistics before the loss can be checked, so the guard copies the buffers before
each forward pass and puts them back when the step is skipped (one fused copy, about 0.1 ms
a step for ResNet-56 on one CPU thread). Before a
checkpoint is written the weights are checked, so ``last.pt`` and ``best.pt`` always hold
the last good state.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..weights.state_dict_io import nonfinite_tensors


class TrainingDiverged(ValueError):
    """The loss or the weights became NaN or infinite."""


class NonFiniteGuard:
    """Counts consecutive non-finite losses; raises :class:`TrainingDiverged` at ``limit``.
    Call :meth:`keep` before each training forward pass of ``model``."""

    def __init__(self, limit: int, run_dir: Path, cause: str, model: nn.Module) -> None:
        self.limit = limit
        self.run_dir = run_dir
        self.cause = cause
        self.in_a_row = 0
        self._buffers = list(model.buffers())  # BatchNorm's running mean, var and count
        self._kept = [b.detach().clone() for b in self._buffers]

    def keep(self) -> None:
        """Remember the buffers as they are before a forward pass, for a skipped step."""
        if self._buffers:
            torch._foreach_copy_(self._kept, self._buffers)

    def finite(self, loss: torch.Tensor, epoch: int, step: int, steps: int,
               all_ranks: bool = False) -> bool:
        """True when ``loss`` is finite (train on); False to skip this step. Waits for the
        device once per step: the price of never stepping on a NaN. ``all_ranks`` (DDP):
        the step counts as finite only if it is on every rank, so all ranks skip together
        (one rank skipping a step the others take would leave its gradient all-reduce
        unmatched)."""
        ok = torch.isfinite(loss.detach()).all().to(torch.int32)
        if all_ranks:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if bool(ok):
            self.in_a_row = 0
            return True
        if self._buffers:  # undo what the skipped batch did to the running statistics
            with torch.no_grad():
                torch._foreach_copy_(self._buffers, self._kept)
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            raise TrainingDiverged(
                f"training diverged: the loss was NaN or infinite for {self.in_a_row} steps "
                f"in a row (epoch {epoch + 1}, step {step + 1} of {steps}); likely cause: "
                f"{self.cause}; {kept_checkpoint(self.run_dir)}")
        return False


def step_schedule_without_update(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Advance the learning-rate schedule past a skipped step, so that it follows the step
    index and ends where the run ends (as with fp16's scaler skipping a step). PyTorch
    warns when a schedule steps before the optimizer ever has (a skipped first step): that
    order is meant here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`",
                                category=UserWarning)
        scheduler.step()


def check_weights(model: nn.Module, run_dir: Path, epoch: int, cause: str) -> None:
    """Refuse to checkpoint weights holding NaN or infinity."""
    bad = nonfinite_tensors(model.state_dict())
    if bad:
        raise TrainingDiverged(
            f"training diverged: {len(bad)} weight tensors hold NaN or infinite values after "
            f"epoch {epoch + 1} (e.g. {', '.join(bad[:3])}); likely cause: {cause}; "
            f"{kept_checkpoint(run_dir)}")


def kept_checkpoint(run_dir: Path) -> str:
    last = run_dir / "last.pt"
    if last.exists():
        return f"the last good checkpoint {last} is kept"
    return "no checkpoint was written"


def likely_cause(lr: float, amp: torch.dtype | None, grad_clip: float, high_lr: float) -> str:
    """A guess at why a run diverged, from its settings."""
    if lr >= high_lr:
        return f"the learning rate {lr:g} is far too high"
    if amp == torch.float16:
        return "fp16 overflow (train in bf16 or without mixed precision)"
    clip = "" if grad_clip > 0 else ", or clip the gradient norm (grad_clip)"
    return f"the learning rate {lr:g} is too high for this model and batch size{clip}"
