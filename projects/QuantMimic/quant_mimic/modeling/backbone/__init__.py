"""QuantMimic backbones (importing this registers them in detectron2's BACKBONE_REGISTRY)."""

from .norm import scaled_channels, tiny_norm
from .tiny_resnet import build_tiny_resnet_backbone, build_tiny_resnet_fpn_backbone
from .vgg import VGG, build_vgg_backbone, build_vgg_fpn_backbone

__all__ = [
    "VGG",
    "build_vgg_backbone",
    "build_vgg_fpn_backbone",
    "build_tiny_resnet_backbone",
    "build_tiny_resnet_fpn_backbone",
    "scaled_channels",
    "tiny_norm",
]
