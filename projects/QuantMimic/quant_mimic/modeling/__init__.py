"""QuantMimic models; importing this package registers its backbones and meta-architecture."""

from .backbone import (
    add_tiny_resnet_config,
    build_tiny_resnet_backbone,
    build_tiny_resnet_fpn_backbone,
    scaled_channels,
    tiny_norm,
)
from .meta_arch import MIMIC_FEATURES_KEY, QuantMimicRCNN
from .mimic_loss import MimicFeatures, MimicLoss
from .quantizer import QuantizedReLU, Quantizer, quantize, quantize_outputs

__all__ = [
    "MIMIC_FEATURES_KEY",
    "MimicFeatures",
    "MimicLoss",
    "QuantMimicRCNN",
    "QuantizedReLU",
    "Quantizer",
    "add_tiny_resnet_config",
    "build_tiny_resnet_backbone",
    "build_tiny_resnet_fpn_backbone",
    "quantize",
    "quantize_outputs",
    "scaled_channels",
    "tiny_norm",
]
