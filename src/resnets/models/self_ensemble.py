"""Geometric self-ensemble for super-resolution (x8): EDSR's "+" models (Lim et al. 2017,
Sec. 4.3, after Timofte et al. 2016, "Seven ways to improve example-based single image
super resolution").

The input is run in its 8 dihedral poses (4 rotations by 90 degrees, each with and without
a horizontal flip); each output is turned back and the 8 are averaged. Eight times the
compute for a better estimate; for a network that is itself equivariant to these poses
(bicubic upsampling is) it changes nothing. Results made this way are reported as
"self-ensemble x8", never as single-pass numbers.
"""

from __future__ import annotations

import torch
from torch import nn

POSES = tuple((k, flip) for k in range(4) for flip in (False, True))  # (quarter turns, flip)
LABEL = "self-ensemble x8"


def to_pose(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """``x`` flipped left-right (if ``flip``), then turned ``k`` quarter turns."""
    x = x.flip(-1) if flip else x
    return torch.rot90(x, k, dims=(-2, -1))


def from_pose(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """The inverse of :func:`to_pose`."""
    y = torch.rot90(y, -k, dims=(-2, -1))
    return y.flip(-1) if flip else y


class SelfEnsemble(nn.Module):
    """``model`` (called ``model(x, scale)``) averaged over the 8 poses of its input.

    The 4 poses that keep the image's orientation and the 4 that swap height and width run
    as one batch each (2 calls instead of 8).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def config(self):  # the wrapped model's (its input channels), for the tasks
        return getattr(self.model, "config", None)

    @property
    def scales(self) -> tuple[int, ...] | None:
        return getattr(self.model, "scales", None)

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected a (N, C, H, W) batch, got shape {tuple(x.shape)}")
        n = x.shape[0]
        total = None
        for turns in ((0, 2), (1, 3)):  # same shape within each group
            poses = [(k, flip) for k, flip in POSES if k in turns]
            batch = torch.cat([to_pose(x, k, flip) for k, flip in poses])
            out = self.model(batch, scale)
            for i, (k, flip) in enumerate(poses):
                back = from_pose(out[i * n:(i + 1) * n], k, flip).float()
                total = back if total is None else total + back
        return total / len(POSES)
