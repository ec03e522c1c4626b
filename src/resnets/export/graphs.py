"""Wrappers that change what an exported graph takes or gives.

- :class:`Uint8Input`: the normalisation moves into the graph, so uint8 images (resized and
  cropped, 0-255) go straight in; any program runs the file without knowing the mean and std.
- :class:`PooledFeatures`: the pooled ``pre_logits`` vector instead of logits, for
  embeddings (similarity search, linear probes).
- :class:`AtScale`: a super-resolution model at one scale, ``(N, C, H, W)`` in, the
  upscaled batch out: exported graphs take one tensor, and the scale picks the upsampler.

All are plain modules: every backend and export format takes them like the model itself.
"""

from __future__ import annotations

import torch
from torch import nn


class Uint8Input(nn.Module):
    """``model`` behind the value steps of its preprocessing: uint8 ``(N, C, H, W)`` in.

    The same operations as :meth:`resnets.weights.Preprocessing.normalize` (scale by 1/255,
    subtract the mean, divide by the std), so outputs match the float model fed the
    normalised batch to float32 rounding. The steps cannot be folded into the first conv:
    its zero padding would then pad with the mean colour's negative, not with zero.
    """

    input_dtype = torch.uint8  # read by the exporters (resnets.export.shapes.input_dtype)

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]
                 ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32) * (1.0 / 255.0)
        return self.model((x - self.mean) / self.std)


class PooledFeatures(nn.Module):
    """The pooled features of a :class:`resnets.models.ResNet` (the ``pre_logits`` vector
    that ``fc`` takes): ``(N, num_features)`` out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "forward_features") or not hasattr(model, "forward_head"):
            raise ValueError(f"{type(model).__name__} has no forward_features/forward_head: "
                             "pooled features need a resnets ResNet")
        self.model = model
        self.num_features = getattr(model, "num_features", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


class AtScale(nn.Module):
    """A super-resolution model (``model(x, scale)``) fixed at ``scale``: one graph per scale,
    since a multi-scale network runs a different upsampler for each."""

    def __init__(self, model: nn.Module, scale: int) -> None:
        super().__init__()
        self.model = model
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.scale)

    def extra_repr(self) -> str:  # part of the model cache keys (export.model_cache)
        return f"scale={self.scale}"
