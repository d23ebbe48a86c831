"""QuantMimic models; importing this package registers its backbones, R-FCN head and meta-architecture."""

from .backbone import (
    VGG,
    build_tiny_resnet_backbone,
    build_tiny_resnet_fpn_backbone,
    build_vgg_backbone,
    build_vgg_fpn_backbone,
    scaled_channels,
    tiny_norm,
)
from .meta_arch import QuantMimicRCNN
from .mimic_loss import MimicFeatures, MimicLoss
from .quantizer import QuantizedReLU, Quantizer, quantize, quantize_outputs
from .rfcn import PSRoIPredictor, RFCNROIHeads

__all__ = [
    "MimicFeatures",
    "MimicLoss",
    "PSRoIPredictor",
    "QuantMimicRCNN",
    "QuantizedReLU",
    "Quantizer",
    "RFCNROIHeads",
    "VGG",
    "build_tiny_resnet_backbone",
    "build_tiny_resnet_fpn_backbone",
    "build_vgg_backbone",
    "build_vgg_fpn_backbone",
    "quantize",
    "quantize_outputs",
    "scaled_channels",
    "tiny_norm",
]
