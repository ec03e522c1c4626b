"""Parameter and multiply-accumulate counts, computed from the model itself.

MACs come from ``torch.utils.flop_counter`` (convolutions and matrix products, the
convention of torchvision's published "GFLOPS", which are MACs), run on the meta device
so that even ResNet-1202 costs no real compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .blocks import BasicBlock, Bottleneck
from .registry import build_model, get_spec
from .resnet import ResNet


@dataclass(frozen=True)
class ModelStats:
    name: str
    params: int
    macs: int
    input_size: tuple[int, int, int]
    depth: int
    stride_placement: str
    shortcut: str  # "A", "B", "C", or "none" for a plain net

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on a single image of ``input_size``."""
    device = next(model.parameters()).device
    x = torch.empty((1, *input_size), device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() // 2


def model_stats(name: str, input_size: tuple[int, int, int] | None = None,
                **kwargs) -> ModelStats:
    """Parameters and MACs of a registered model at its default (or the given) input size."""
    spec = get_spec(name)
    size = input_size or spec.input_size
    with torch.device("meta"):
        model = build_model(name, **kwargs)
    params = count_params(model)
    _drop_batch_norms(model)
    return ModelStats(name, params, count_macs(model, size), size,
                      count_depth(model), stride_placement(model),
                      model.shortcut if getattr(model, "residual", False) else "none")


def _drop_batch_norms(model: nn.Module) -> None:
    """Replace every batch norm of a throwaway model by an identity, in place.

    Batch norm adds no MACs by the convention above and keeps shapes, but on the meta
    device under ``FlopCounterMode`` it runs through Python decompositions: 8 of the 14 s
    that the 23 registered models took (ResNet-1202 alone: 6.7 s)."""
    for parent in list(model.modules()):
        for key, child in parent.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, key, nn.Identity())


def count_depth(model: nn.Module) -> int:
    """Weighted layers on the main path (convs and fc), the number in a ResNet's name."""
    stem = model.conv1
    depth = len([m for m in stem.modules() if isinstance(m, nn.Conv2d)])
    for m in model.modules():
        if isinstance(m, BasicBlock):
            depth += 2
        elif isinstance(m, Bottleneck):
            depth += 3
    return depth + (1 if isinstance(getattr(model, "fc", None), nn.Linear) else 0)


def stride_placement(model: nn.Module) -> str:
    """Where a Bottleneck model strides: ``"3x3"`` (torchvision v1.5) or ``"1x1"`` (paper)."""
    if not isinstance(model, ResNet) or model.layer1[0].__class__.__name__ != "Bottleneck":
        return "-"
    return "1x1 (paper)" if model.stride_in_1x1 else "3x3 (v1.5)"


@dataclass(frozen=True)
class StageRow:
    name: str
    description: str
    output_shape: tuple[int, ...]
    params: int


def stage_rows(name: str, input_size: tuple[int, int, int] | None = None,
               **kwargs) -> list[StageRow]:
    """The top-level modules of a model in forward order with their output shapes."""
    spec = get_spec(name)
    size = input_size or spec.input_size
    with torch.device("meta"):
        model = build_model(name, **kwargs).eval()
        shapes: dict[str, tuple[int, ...]] = {}
        hooks = [child.register_forward_hook(
                     lambda _m, _i, out, key=key: shapes.__setitem__(key, tuple(out.shape)))
                 for key, child in model.named_children()]
        with torch.no_grad():
            model(torch.empty((1, *size)))
        for h in hooks:
            h.remove()
    rows = []
    for key, child in model.named_children():
        if key not in shapes or isinstance(child, nn.Identity):
            continue
        if isinstance(child, nn.Sequential) and key.startswith("layer"):
            block = child[0]
            shortcut = "plain" if not block.residual else "residual"
            desc = f"{len(child)} x {type(block).__name__} ({shortcut}, stride {block.stride})"
        else:
            desc = child.__class__.__name__
            if isinstance(child, nn.Conv2d):
                desc += f" {child.kernel_size[0]}x{child.kernel_size[1]}/{child.stride[0]}"
        rows.append(StageRow(key, desc, shapes[key], count_params(child)))
    return rows
