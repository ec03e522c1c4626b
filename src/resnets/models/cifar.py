"""The paper's CIFAR-10 ResNets and plain nets (He et al. 2016, section 4.2).

A 3x3 conv with 16 filters, then three stages of ``n`` BasicBlocks with 16, 32 and 64
channels on 32x32, 16x16 and 8x8 maps, global average pool and a 10-way fc: 6n + 2
layers. Shortcut option A (zero padding, no parameters) as in the paper. Parameter counts
(Table 6: 0.27M .. 19.4M) are exactly 269,722 / 464,154 / 658,586 / 853,018 / 1,727,962 /
19,421,274 for n = 3, 5, 7, 9, 18, 200.
"""

from __future__ import annotations

from .blocks import BasicBlock
from .registry import register_model
from .resnet import ResNet, build_resnet

_CIFAR10 = {"family": "cifar", "input_size": (3, 32, 32), "num_classes": 10}
_TABLE6 = "He2016 T6"  # He et al. 2016, Table 6: CIFAR-10 test error


def cifar_resnet(depth: int, residual: bool = True, **kwargs) -> ResNet:
    """A 6n+2-layer CIFAR network; ``residual=False`` gives the plain twin."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
    n = (depth - 2) // 6
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("shortcut", "A")
    return build_resnet(BasicBlock, [n, n, n], stage_channels=(16, 32, 64), stem="3x3",
                        residual=residual, **kwargs)


@register_model(**_CIFAR10, paper_error=8.75, paper_source=_TABLE6)
def resnet20(**kwargs) -> ResNet:
    return cifar_resnet(20, **kwargs)


@register_model(**_CIFAR10, paper_error=7.51, paper_source=_TABLE6)
def resnet32(**kwargs) -> ResNet:
    return cifar_resnet(32, **kwargs)


@register_model(**_CIFAR10, paper_error=7.17, paper_source=_TABLE6)
def resnet44(**kwargs) -> ResNet:
    return cifar_resnet(44, **kwargs)


@register_model(**_CIFAR10, paper_error=6.97, paper_source=_TABLE6)
def resnet56(**kwargs) -> ResNet:
    return cifar_resnet(56, **kwargs)


@register_model(**_CIFAR10, paper_error=6.43, paper_source=_TABLE6)
def resnet110(**kwargs) -> ResNet:
    return cifar_resnet(110, **kwargs)


@register_model(**_CIFAR10, paper_error=7.93, paper_source=_TABLE6)
def resnet1202(**kwargs) -> ResNet:
    return cifar_resnet(1202, **kwargs)


@register_model(**_CIFAR10)
def plain20(**kwargs) -> ResNet:
    return cifar_resnet(20, residual=False, **kwargs)


@register_model(**_CIFAR10)
def plain32(**kwargs) -> ResNet:
    return cifar_resnet(32, residual=False, **kwargs)


@register_model(**_CIFAR10)
def plain44(**kwargs) -> ResNet:
    return cifar_resnet(44, residual=False, **kwargs)


@register_model(**_CIFAR10)
def plain56(**kwargs) -> ResNet:
    return cifar_resnet(56, residual=False, **kwargs)


@register_model(**_CIFAR10)
def plain110(**kwargs) -> ResNet:
    return cifar_resnet(110, residual=False, **kwargs)
