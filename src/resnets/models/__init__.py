"""Model definitions. Importing this package registers every builder."""

from . import imagenet  # noqa: I001  (registration order: ImageNet, then CIFAR)
from . import cifar
from .blocks import BasicBlock, Bottleneck, DropPath, ShortcutA
from .resnet import ResNet, ResNetFeatures, build_resnet

__all__ = ["BasicBlock", "Bottleneck", "DropPath", "ResNet", "ResNetFeatures", "ShortcutA",
           "build_resnet", "cifar", "imagenet"]
