"""QuantMimic: Quantization Mimic (Wei et al., ECCV 2018) as a Detectron2 project.

Importing the package registers everything with detectron2: the tiny ResNet and VGG backbones, the
R-FCN head, the QuantMimicRCNN meta-architecture and the built-in data set.
"""

from . import data  # noqa: F401  (registers quantmimic_shapes_{train,val})
from .config import add_quantmimic_config
from .modeling import (
    MimicFeatures,
    MimicLoss,
    QuantizedReLU,
    Quantizer,
    QuantMimicRCNN,
    RFCNROIHeads,
    build_tiny_resnet_backbone,
    build_tiny_resnet_fpn_backbone,
    build_vgg_backbone,
    build_vgg_fpn_backbone,
    quantize,
)

__version__ = "0.1.0"

__all__ = [
    "MimicFeatures",
    "MimicLoss",
    "QuantMimicRCNN",
    "QuantizedReLU",
    "Quantizer",
    "RFCNROIHeads",
    "add_quantmimic_config",
    "build_tiny_resnet_backbone",
    "build_tiny_resnet_fpn_backbone",
    "build_vgg_backbone",
    "build_vgg_fpn_backbone",
    "quantize",
]
