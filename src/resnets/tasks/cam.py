"""Grad-CAM (Selvaraju et al. 2017): where in the picture the classifier looked.

The map is taken on the last stage, the output of ``forward_features`` (``layer3`` of the
CIFAR networks, ``layer4`` of the ImageNet ones): each channel is weighted by the mean
gradient of the class score over its positions, the weighted sum goes through a ReLU and is
scaled to [0, 1]. No hooks are registered, so a model that serves other threads at the same
time is not disturbed.

The map covers what the model saw: the centre crop of the picture after its shorter side was
resized (``Preprocess``). :func:`heatmap_rgba` places it back over the original picture
(transparent outside the crop); :func:`overlay` blends it into the picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..data.io import ImageReadError, read_rgb
from ..files import atomic_output
from ..weights.preprocessing import Preprocessing

COLORMAP = "jet"  # the colormap of the Grad-CAM paper's figures


@dataclass
class CamResult:
    """Maps at the model's input size, in [0, 1], and the class each one explains."""

    maps: torch.Tensor  # (N, size, size)
    targets: list[int]


def grad_cam(model: nn.Module, x: torch.Tensor, targets: Sequence[int] | None = None
             ) -> CamResult:
    """Grad-CAM of ``model`` on a normalised batch ``x``, for ``targets`` (default: top-1).

    ``model`` needs ``forward_features`` and ``forward_head`` (every ``resnets`` classifier
    has them).
    """
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise ValueError(f"Grad-CAM needs a model with forward_features and forward_head, got "
                         f"{type(model).__name__}")
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone()
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        chosen = (logits.argmax(1).tolist() if targets is None else [int(t) for t in targets])
        if len(chosen) != x.shape[0]:
            raise ValueError(f"expected one target per image ({x.shape[0]}), got {len(chosen)}")
        score = logits.gather(1, torch.tensor(chosen, device=logits.device)[:, None]).sum()
        (grads,) = torch.autograd.grad(score, feats)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * feats.detach()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return CamResult((cam / peak).clamp(0, 1).cpu(), chosen)


def crop_box(height: int, width: int, pre: Preprocessing) -> tuple[int, int, int, int]:
    """The region ``(left, top, right, bottom)`` of an ``height x width`` picture the model
    saw after ``pre``: the shorter side resized to ``pre.resize``, centre crop ``pre.crop``.
    """
    size = pre.input_size or min(height, width)
    resize = pre.resize or size
    if (height, width) == (size, size):
        return 0, 0, width, height
    factor = resize / min(height, width)
    side = size / factor
    left, top = (width - side) / 2, (height - side) / 2
    return round(left), round(top), round(left + side), round(top + side)


def colorize(cam: torch.Tensor) -> np.ndarray:
    """A ``(h, w)`` map in [0, 1] as ``(h, w, 3)`` uint8 colours, looked up in the
    colormap's own table turned to uint8: matplotlib's float64 RGBA of a whole picture took
    about 60 bytes a pixel, this about 5."""
    from matplotlib import colormaps

    cmap = colormaps[COLORMAP]  # 256 colours: an index fits a uint8
    table = (cmap(np.linspace(0, 1, cmap.N))[:, :3] * 255 + 0.5).astype(np.uint8)
    scaled = cam.numpy() * cmap.N  # matplotlib's rule: floor(x * N), and 1.0 -> N - 1
    np.clip(scaled, 0, cmap.N - 1, out=scaled)  # below 0: the first colour, as matplotlib
    index = scaled.astype(np.uint8)
    del scaled  # freed before the colours are made
    return table[index]


def heatmap_rgba(cam: torch.Tensor, height: int, width: int, pre: Preprocessing,
                 opacity: float = 0.5) -> Image.Image:
    """The map placed over an ``height x width`` picture as an RGBA image: coloured inside
    the crop the model saw (``opacity`` times the map, so cold areas stay see-through),
    transparent outside it."""
    left, top, right, bottom = crop_box(height, width, pre)
    size = (max(bottom - top, 1), max(right - left, 1))
    big = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    big = big.clamp(0, 1)
    alpha = (big.numpy() * opacity * 255 + 0.5).astype(np.uint8)
    tile = Image.fromarray(np.dstack([colorize(big), alpha]), mode="RGBA")
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    canvas.paste(tile, (left, top))
    return canvas


def overlay(image: torch.Tensor, cam: torch.Tensor, pre: Preprocessing,
            opacity: float = 0.5) -> Image.Image:
    """A uint8 ``(3, H, W)`` picture with the map blended in (RGB)."""
    h, w = image.shape[-2:]
    base = Image.fromarray(image.permute(1, 2, 0).numpy()).convert("RGBA")
    return Image.alpha_composite(base, heatmap_rgba(cam, h, w, pre, opacity)).convert("RGB")


def write_cam_files(model: nn.Module, pre: Preprocessing, paths: Sequence[str | Path],
                    out_dir: str | Path) -> tuple[list[Path], list[str]]:
    """One ``<stem>_cam.png`` per readable image in ``out_dir`` (written atomically):
    ``(written, errors)``. An unreadable image becomes one error line; the others still run.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"the heat-map output folder is a file: {out}")
    out.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    written: list[Path] = []
    errors: list[str] = []
    seen: dict[Path, Path] = {}
    for item in paths:
        source = Path(item)
        target = out / f"{source.stem}_cam.png"
        if target in seen:
            errors.append(f"{source} would overwrite {target}, the map of {seen[target]}: "
                          "rename one of them")
            continue
        try:
            image = read_rgb(source)
        except (ImageReadError, FileNotFoundError) as e:
            errors.append(str(e))
            continue
        result = grad_cam(model, pre(image)[None].to(device))
        with atomic_output(target) as tmp:
            overlay(image, result.maps[0], pre).save(tmp, format="PNG")
        seen[target] = source
        written.append(target)
    return written, errors
