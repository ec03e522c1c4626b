"""Residual blocks of He et al. 2016, "Deep Residual Learning for Image Recognition".

Module names (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``conv3``, ``bn3``, ``downsample``)
follow torchvision's ``models/resnet.py`` so that its published weights load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

NormLayer = Callable[[int], nn.Module]

SHORTCUT_OPTIONS = ("A", "B", "C")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1,
            dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding that keeps the size at stride 1."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                     groups=groups, bias=False, dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, the projection of shortcut options B and C."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ShortcutA(nn.Module):
    """Option A: identity with stride-s subsampling and zero-padded extra channels.

    It has no parameters. The extra channels are split evenly before and after the input
    channels, as the widely used CIFAR implementation (akamaster) does, so its checkpoints
    give the same outputs here. A real module (not a lambda) so models pickle and script.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"option A shortcut cannot reduce channels: {in_planes} -> "
                             f"{out_planes}; use shortcut='B'")
        self.stride = stride
        self.pad_front = (out_planes - in_planes) // 2
        self.pad_back = out_planes - in_planes - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_front}, {self.pad_back})"


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a block's residual branch per sample."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_path rate must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def make_shortcut(option: str, in_planes: int, out_planes: int, stride: int,
                  norm_layer: NormLayer, avg_down: bool = False) -> nn.Module | None:
    """The shortcut of one block: ``None`` means the identity.

    A: parameter-free (:class:`ShortcutA`) where the shape changes. B: a 1x1 conv + BN
    projection where the shape changes (torchvision's choice). C: a projection on every block.
    ``avg_down`` (ResNet-D) averages 2x2 before a stride-1 projection instead of striding it.
    """
    if option not in SHORTCUT_OPTIONS:
        raise ValueError(f"unknown shortcut option {option!r}: expected one of 'A', 'B', 'C'")
    shape_changes = stride != 1 or in_planes != out_planes
    if option == "A":
        return ShortcutA(in_planes, out_planes, stride) if shape_changes else None
    if option == "B" and not shape_changes:
        return None
    if avg_down and stride != 1:
        pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
        return nn.Sequential(pool, conv1x1(in_planes, out_planes), norm_layer(out_planes))
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), norm_layer(out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (Fig. 2 of the paper); used by ResNet-18/34 and CIFAR.

    ``residual=False`` removes the shortcut, giving the "plain" block of the paper's
    comparisons.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, groups: int = 1, base_width: int = 64,
                 dilation: int = 1, norm_layer: NormLayer | None = None, residual: bool = True,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and width_per_group=64, got "
                             f"groups={groups}, width_per_group={base_width}")
        norm_layer = norm_layer or nn.BatchNorm2d
        self.conv1 = conv3x3(inplanes, planes, stride, dilation=dilation)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride
        self.residual = residual
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.residual:
            if self.downsample is not None:
                identity = self.downsample(x)
            out = self.drop_path(out) + identity
        out = self.relu(out)
        return out

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a shortcut; used by ResNet-50/101/152.

    Departure from the paper, as torchvision ("ResNet v1.5"): the stride sits on the 3x3
    conv, not on the first 1x1. ``stride_in_1x1=True`` restores the paper's placement.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, groups: int = 1, base_width: int = 64,
                 dilation: int = 1, norm_layer: NormLayer | None = None, residual: bool = True,
                 drop_path: float = 0.0, stride_in_1x1: bool = False) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, width, stride_1x1)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.residual = residual
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.residual:
            if self.downsample is not None:
                identity = self.downsample(x)
            out = self.drop_path(out) + identity
        out = self.relu(out)
        return out

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)
