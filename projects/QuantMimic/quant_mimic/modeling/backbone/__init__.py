"""QuantMimic backbones (importing this registers them in detectron2's BACKBONE_REGISTRY)."""

from .norm import scaled_channels, tiny_norm
from .tiny_resnet import add_tiny_resnet_config, build_tiny_resnet_backbone, build_tiny_resnet_fpn_backbone
from .vgg import VGG, add_vgg_config, build_vgg_backbone, build_vgg_fpn_backbone

__all__ = [
    "VGG",
    "add_vgg_config",
    "build_vgg_backbone",
    "build_vgg_fpn_backbone",
    "add_tiny_resnet_config",
    "build_tiny_resnet_backbone",
    "build_tiny_resnet_fpn_backbone",
    "scaled_channels",
    "tiny_norm",
]
