"""QuantMimic backbones (importing this registers them in detectron2's BACKBONE_REGISTRY)."""

from .tiny_resnet import (
    add_tiny_resnet_config,
    build_tiny_resnet_backbone,
    build_tiny_resnet_fpn_backbone,
    scaled_channels,
    tiny_norm,
)

__all__ = [
    "add_tiny_resnet_config",
    "build_tiny_resnet_backbone",
    "build_tiny_resnet_fpn_backbone",
    "scaled_channels",
    "tiny_norm",
]
