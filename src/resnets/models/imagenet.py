"""ImageNet ResNets (Table 1 of He et al. 2016) and the torchvision family around them.

Builders are weight-compatible with torchvision's namesakes. ``paper_error`` is the top-1
error (%) the source reports for the same model: He2016 = He et al. 2016 (10-crop testing,
Table 2 or 3; ResNet-34 with option B shortcuts), Xie2017 = the ResNeXt paper (224 crop).
"""

from __future__ import annotations

from .blocks import BasicBlock, Bottleneck
from .registry import register_model
from .resnet import ResNet, build_resnet

_IN1K = {"family": "imagenet", "input_size": (3, 224, 224), "num_classes": 1000}
_HE2016_T2 = "He2016 T2"
_HE2016_T3 = "He2016 T3"


@register_model(**_IN1K, paper_error=27.88, paper_source=_HE2016_T2)
def resnet18(**kwargs) -> ResNet:
    return build_resnet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model(**_IN1K, paper_error=24.52, paper_source=_HE2016_T3 + " (B)")
def resnet34(**kwargs) -> ResNet:
    return build_resnet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model(**_IN1K, paper_error=22.85, paper_source=_HE2016_T3)
def resnet50(**kwargs) -> ResNet:
    return build_resnet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model(**_IN1K, paper_error=21.75, paper_source=_HE2016_T3)
def resnet101(**kwargs) -> ResNet:
    return build_resnet(Bottleneck, [3, 4, 23, 3], **kwargs)


@register_model(**_IN1K, paper_error=21.43, paper_source=_HE2016_T3)
def resnet152(**kwargs) -> ResNet:
    return build_resnet(Bottleneck, [3, 8, 36, 3], **kwargs)


@register_model(**_IN1K, paper_error=27.94, paper_source=_HE2016_T2)
def plain18(**kwargs) -> ResNet:
    return build_resnet(BasicBlock, [2, 2, 2, 2], residual=False, **kwargs)


@register_model(**_IN1K, paper_error=28.54, paper_source=_HE2016_T2)
def plain34(**kwargs) -> ResNet:
    return build_resnet(BasicBlock, [3, 4, 6, 3], residual=False, **kwargs)


@register_model(**_IN1K, paper_error=22.2, paper_source="Xie2017 T3")
def resnext50_32x4d(**kwargs) -> ResNet:
    return build_resnet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4, **kwargs)


@register_model(**_IN1K)
def resnext101_32x8d(**kwargs) -> ResNet:
    return build_resnet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=8, **kwargs)


@register_model(**_IN1K, paper_error=20.4, paper_source="Xie2017 T5")
def resnext101_64x4d(**kwargs) -> ResNet:
    return build_resnet(Bottleneck, [3, 4, 23, 3], groups=64, width_per_group=4, **kwargs)


@register_model(**_IN1K)
def wide_resnet50_2(**kwargs) -> ResNet:
    # Wide ResNet-50-2: the Bottleneck's inner width doubled, outer width unchanged.
    return build_resnet(Bottleneck, [3, 4, 6, 3], width_per_group=128, **kwargs)


@register_model(**_IN1K)
def wide_resnet101_2(**kwargs) -> ResNet:
    return build_resnet(Bottleneck, [3, 4, 23, 3], width_per_group=128, **kwargs)
