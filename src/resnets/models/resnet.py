"""The ResNet network: a stem, stages of residual blocks, global average pool, classifier.

One class serves the ImageNet models (7x7 stem, four stages), the paper's CIFAR models
(3x3 stem, three stages of 16/32/64 channels) and their plain twins. Module names match
torchvision's (``conv1``, ``bn1``, ``layer1``.., ``fc``): they are the contract that lets
its weights load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import BasicBlock, Bottleneck, NormLayer, conv3x3, make_shortcut

Block = type[BasicBlock] | type[Bottleneck]

STEMS = ("7x7", "3x3", "deep")


class ResNet(nn.Module):
    """A residual network. Every option of the family is a keyword here.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. ``[3, 4, 6, 3]`` for ResNet-50.
        num_classes: classifier outputs; 0 leaves the pooled features (no ``fc``).
        in_chans: input channels.
        stage_channels: base width of each stage (the block's ``planes``).
        stem: ``"7x7"`` (ImageNet: 7x7/2 conv + 3x3/2 max pool), ``"3x3"`` (CIFAR: one
            3x3/1 conv) or ``"deep"`` (ResNet-C/D: three 3x3 convs + max pool).
        shortcut: ``"A"``, ``"B"`` or ``"C"`` (see :func:`make_shortcut`).
        residual: ``False`` builds the plain twin (no shortcuts at all).
        zero_init_residual: start the last BN of each residual branch at zero, so each
            block starts as its shortcut (the identity where shapes match).
        drop_path_rate: stochastic depth, rising linearly to this rate at the last block.
        avg_down: ResNet-D projection shortcut (2x2 average pool, then stride-1 1x1 conv).
        groups, width_per_group: ResNeXt cardinality and width (Bottleneck only).
        replace_stride_with_dilation: per stage after the first, dilate instead of stride.
        stride_in_1x1: put a Bottleneck's stride on its first 1x1 conv, as the paper did.
    """

    # Metadata for feature extraction (timm's convention), not part of the scripted graph.
    __jit_ignored_attributes__ = ["feature_info"]

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        stage_channels: Sequence[int] = (64, 128, 256, 512),
        stem: str = "7x7",
        shortcut: str = "B",
        residual: bool = True,
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
        avg_down: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: Sequence[bool] | None = None,
        stride_in_1x1: bool = False,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        if block not in (BasicBlock, Bottleneck):
            raise ValueError(f"block must be BasicBlock or Bottleneck, got {block!r}")
        if len(layers) not in (3, 4):
            raise ValueError(f"expected 3 stages (CIFAR) or 4 (ImageNet), got {list(layers)}")
        if len(layers) != len(stage_channels):
            raise ValueError(f"layers {list(layers)} and stage_channels {list(stage_channels)} "
                             "must have the same length")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}: expected one of {', '.join(STEMS)}")
        if shortcut not in ("A", "B", "C"):
            raise ValueError(f"unknown shortcut option {shortcut!r}: expected one of 'A', 'B', 'C'")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False] * (len(layers) - 1)
        if len(replace_stride_with_dilation) != len(layers) - 1:
            raise ValueError(f"replace_stride_with_dilation needs {len(layers) - 1} entries, "
                             f"got {list(replace_stride_with_dilation)}")
        self._norm_layer = norm_layer or nn.BatchNorm2d
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.shortcut = shortcut
        self.residual = residual
        self.groups = groups
        self.base_width = width_per_group
        self.avg_down = avg_down
        self.stride_in_1x1 = stride_in_1x1
        self.inplanes = stage_channels[0]
        self.dilation = 1

        self._make_stem(stem, in_chans)
        reduction = 1 if stem == "3x3" else 2
        self.feature_info = [
            {"num_chs": self.inplanes, "reduction": reduction, "module": "relu", "index": 0}]
        if stem != "3x3":
            reduction *= 2  # the stem's max pool

        n_blocks = sum(layers)
        block_rates = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]
        first = 0
        for i, (n, planes) in enumerate(zip(layers, stage_channels, strict=True)):
            stride = 1 if i == 0 else 2
            dilate = i > 0 and replace_stride_with_dilation[i - 1]
            stage = self._make_layer(block, planes, n, stride, dilate,
                                     block_rates[first:first + n])
            first += n
            self.add_module(f"layer{i + 1}", stage)
            if not dilate:
                reduction *= stride
            self.feature_info.append({"num_chs": self.inplanes, "reduction": reduction,
                                      "module": f"layer{i + 1}", "index": i + 1})
        self.num_stages = len(layers)
        if self.num_stages == 3:  # the CIFAR layout; a parameter-free stand-in keeps forward plain
            self.layer4 = nn.Identity()
        self.output_stride = reduction
        self.num_features = self.inplanes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = (nn.Linear(self.num_features, num_classes) if num_classes > 0
                   else nn.Identity())
        self._init_weights(zero_init_residual)

    def _make_stem(self, stem: str, in_chans: int) -> None:
        norm = self._norm_layer
        width = self.inplanes
        if stem == "7x7":
            self.conv1 = nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3,
                                   bias=False)
        elif stem == "3x3":
            self.conv1 = conv3x3(in_chans, width)
        else:  # ResNet-C deep stem: three 3x3 convs (Bag of Tricks, He et al. 2019)
            half = width // 2
            self.conv1 = nn.Sequential(
                conv3x3(in_chans, half, stride=2), norm(half), nn.ReLU(inplace=True),
                conv3x3(half, half), norm(half), nn.ReLU(inplace=True),
                conv3x3(half, width))
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (nn.Identity() if stem == "3x3"
                        else nn.MaxPool2d(kernel_size=3, stride=2, padding=1))

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int, dilate: bool,
                    drop_rates: Sequence[float]) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        extra = {"stride_in_1x1": self.stride_in_1x1} if block is Bottleneck else {}
        layers = []
        for i in range(blocks):
            out_planes = planes * block.expansion
            block_stride = stride if i == 0 else 1
            downsample = None
            if self.residual:
                downsample = make_shortcut(self.shortcut, self.inplanes, out_planes,
                                           block_stride, self._norm_layer, self.avg_down)
            layers.append(block(
                self.inplanes, planes, block_stride, downsample, groups=self.groups,
                base_width=self.base_width,
                dilation=previous_dilation if i == 0 else self.dilation,
                norm_layer=self._norm_layer, residual=self.residual,
                drop_path=drop_rates[i], **extra))
            self.inplanes = out_planes
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # He et al. 2015 normal init (fan_out, as torchvision); BN starts as the identity.
        if any(p.is_meta for p in self.parameters()):
            return  # nothing to fill; normal_ on meta would import torch._dynamo (~1.5 s)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual and self.residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.zero_init_last()

    @torch.jit.unused
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected a batch of images (N, C, H, W), got shape "
                             f"{tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"expected a {self.in_chans}-channel input, got {x.shape[1]} "
                             f"channels (shape {tuple(x.shape)}); convert the images or "
                             f"build the model with in_chans={x.shape[1]}")
        h, w = x.shape[-2:]
        if h < self.output_stride or w < self.output_stride:
            raise ValueError(f"input {h}x{w} is too small: this network downsamples by "
                             f"{self.output_stride}, so height and width must be >= "
                             f"{self.output_stride}")

    def stages(self) -> list[nn.Module]:
        """The residual stages ``layer1``.. in order."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, before pooling."""
        if not torch.jit.is_scripting():
            if not torch.compiler.is_compiling():
                self._check_input(x)
        x = self.maxpool(self.forward_stem(x))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool and classifier; ``pre_logits=True`` stops before ``fc``."""
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` (0: none), on
        the model's device and in its dtype."""
        like = next(self.parameters())
        self.num_classes = num_classes
        self.fc = (nn.Linear(self.num_features, num_classes, device=like.device,
                             dtype=like.dtype) if num_classes > 0 else nn.Identity())


class ResNetFeatures(ResNet):
    """A ResNet returning the feature maps of the stages in ``out_indices``.

    Index 0 is the stem (after its ReLU), 1.. are ``layer1``.. Its ``feature_info`` lists
    only the returned maps. Keys of the backbone are the classifier's, so the same
    checkpoints load (the head's keys are left out).
    """

    def __init__(self, block: Block, layers: Sequence[int], *,
                 out_indices: Sequence[int] | None = None, **kwargs) -> None:
        kwargs["num_classes"] = 0
        super().__init__(block, layers, **kwargs)
        n = len(self.feature_info)
        out_indices = tuple(range(n)) if out_indices is None else tuple(out_indices)
        bad = [i for i in out_indices if not -n <= i < n]
        if bad or not out_indices:
            raise ValueError(f"out_indices must be in 0..{n - 1}, got {list(out_indices)}")
        self.out_indices = sorted(i % n for i in out_indices)
        self.feature_info = [self.feature_info[i] for i in self.out_indices]
        del self.avgpool, self.fc

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        if not torch.jit.is_scripting():
            if not torch.compiler.is_compiling():
                self._check_input(x)
        x = self.forward_stem(x)
        outs: list[torch.Tensor] = []
        if 0 in self.out_indices:
            outs.append(x)
        x = self.layer1(self.maxpool(x))
        if 1 in self.out_indices:
            outs.append(x)
        x = self.layer2(x)
        if 2 in self.out_indices:
            outs.append(x)
        x = self.layer3(x)
        if 3 in self.out_indices:
            outs.append(x)
        if 4 in self.out_indices:
            outs.append(self.layer4(x))
        return outs


def build_resnet(block: Block, layers: Sequence[int], *, features_only: bool = False,
                 out_indices: Sequence[int] | None = None, **kwargs) -> ResNet:
    """Build a :class:`ResNet`, or a :class:`ResNetFeatures` when ``features_only``."""
    if features_only:
        return ResNetFeatures(block, layers, out_indices=out_indices, **kwargs)
    if out_indices is not None:
        raise ValueError("out_indices is only used with features_only=True")
    return ResNet(block, layers, **kwargs)
