"""Inference-only versions of a model: batch norm folded into the convolutions, channels-last
memory, optional ``torch.compile`` and bf16.

Folding rewrites ``bn(conv(x))`` as one convolution with scaled weights and a bias, which is
exact in eval mode (BN is then a fixed per-channel affine map). Only pairs where the conv
output goes straight into the BN are folded: adjacent ``(Conv2d, BatchNorm2d)`` items of an
``nn.Sequential`` and the ``convN``/``bnN`` pairs of the resnets blocks and stem, whose
forward is exactly ``bnN(convN(x))``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..models.blocks import BasicBlock, Bottleneck
from ..models.resnet import ResNet

# Modules whose forward applies bnN directly to convN's output (N = 1, 2, 3).
_PAIRED_BLOCKS = (BasicBlock, Bottleneck, ResNet)


def _foldable(bn: nn.Module) -> bool:
    """A BatchNorm2d that, in eval mode, is a fixed affine map (it has running statistics)."""
    return (isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
            and bn.running_mean is not None and bn.running_var is not None)


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One convolution computing ``bn(conv(x))`` of an eval-mode BN; computed in float64."""
    inv_std = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
    scale = bn.weight.double() * inv_std if bn.affine else inv_std
    shift = bn.bias.double() if bn.affine else torch.zeros_like(scale)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode, device=conv.weight.device,
                      dtype=conv.weight.dtype)
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    fused.weight.copy_(weight.to(conv.weight.dtype))
    fused.bias.copy_(((bias - bn.running_mean.double()) * scale + shift).to(conv.weight.dtype))
    return fused


def _fold_sequential(seq: nn.Sequential) -> int:
    folded = 0
    names = list(seq._modules)
    for a, b in zip(names, names[1:], strict=False):
        conv, bn = seq._modules[a], seq._modules[b]
        if isinstance(conv, nn.Conv2d) and _foldable(bn):
            seq._modules[a] = fuse_conv_bn(conv, bn)
            seq._modules[b] = nn.Identity()
            folded += 1
    return folded


def _fold_pairs(module: nn.Module) -> int:
    folded = 0
    for n in ("1", "2", "3"):
        conv, bn = getattr(module, f"conv{n}", None), getattr(module, f"bn{n}", None)
        if bn is None or not _foldable(bn):
            continue
        if isinstance(conv, nn.Sequential) and isinstance(conv[-1], nn.Conv2d):  # deep stem
            conv[-1] = fuse_conv_bn(conv[-1], bn)
        elif isinstance(conv, nn.Conv2d):
            setattr(module, f"conv{n}", fuse_conv_bn(conv, bn))
        else:
            continue
        setattr(module, f"bn{n}", nn.Identity())
        folded += 1
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every foldable BN merged into its conv.

    The input model is left unchanged. BN layers without running statistics stay as they are.
    """
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        if isinstance(module, _PAIRED_BLOCKS):
            _fold_pairs(module)
        elif isinstance(module, nn.Sequential):
            _fold_sequential(module)
    return model


class InferenceModule(nn.Module):
    """A model prepared for inference; takes and returns float32 like the original.

    Inputs are converted to the model's memory format and dtype on the way in, logits back to
    float32 on the way out, so callers need not know how the model was optimized.
    """

    def __init__(self, model: nn.Module, channels_last: bool = True,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x).float()

    def extra_repr(self) -> str:
        return f"channels_last={self.channels_last}, dtype={self.dtype}"


def optimize(model: nn.Module, fold_bn: bool = True, channels_last: bool = True,
             compile: bool = False, bf16: bool = False) -> nn.Module:
    """An inference module computing ``model`` faster on CPU; ``model`` is not modified.

    ``fold_bn`` merges BN into the preceding convolutions (equal to eval mode within float32
    rounding); ``channels_last`` stores weights and activations NHWC, the layout oneDNN's
    convolutions prefer; ``compile`` wraps the result in ``torch.compile``; ``bf16`` runs the
    network in bfloat16. bf16 gives the numbers ``torch.autocast("cpu", torch.bfloat16)``
    gives, but converts the weights once instead of on every call.
    """
    model = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = model.to(dtype=dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    module: nn.Module = InferenceModule(model, channels_last, dtype).eval()
    if compile:
        module = torch.compile(module)
    return module
