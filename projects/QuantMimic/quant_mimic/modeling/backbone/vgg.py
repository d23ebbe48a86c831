"""VGG-16 backbones (the paper's WIDER FACE teacher VGG-1-4 and student VGG-1-32), with and without FPN.

VGG-16's thirteen 3x3 convs (conv1_1 .. conv5_3, each followed by a ReLU) in five stages; a 2x2
max-pool (stride 2) opens stages 2..5 and there is no pool5, so conv5 has stride 16 as in
Faster R-CNN / R-FCN. Every width is divided by ``cfg.MODEL.VGG.WIDTH_DIVISOR`` (``d``; floored,
at least one channel is kept)::

    feature  convs            channels   stride
    vgg1     conv1_1..conv1_2   64 / d        1
    vgg2     conv2_1..conv2_2  128 / d        2
    vgg3     conv3_1..conv3_3  256 / d        4
    vgg4     conv4_1..conv4_3  512 / d        8
    vgg5     conv5_1..conv5_3  512 / d       16

``d = 4`` is VGG-1-4 (conv5: 128 channels), ``d = 32`` is VGG-1-32 (conv5: 16 channels).
Parameter names follow the layers (``conv1_1.weight``, ``conv1_1.norm.weight`` with a norm);
``quant_mimic_tools.convert`` maps torchvision's ``features.N`` names onto them.

Both builders are registered in detectron2's ``BACKBONE_REGISTRY``: ``build_vgg_backbone``
(single or multiple maps, e.g. ``OUT_FEATURES ["vgg5"]`` for R-FCN / a C4-style Faster R-CNN)
and ``build_vgg_fpn_backbone``. ``MODEL.QUANTIZER.ENABLED`` puts the quantized ReLU on their
outputs, as for the tiny ResNets. The ``MODEL.VGG.*`` keys are defined in :mod:`quant_mimic.config`.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import Conv2d, FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN

from ..quantizer import maybe_quantize_outputs
from .narrow_fpn import narrow_fpn
from .norm import scaled_channels, tiny_norm

__all__ = [
    "VGG",
    "VGG16_STAGES",
    "build_vgg_backbone",
    "build_vgg_fpn_backbone",
]

# VGG-16 ("configuration D"): (number of 3x3 convs, full output width) of each stage vgg1..vgg5.
VGG16_STAGES: Sequence[tuple[int, int]] = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
# Stages 2..5 open with a 2x2 max-pool of stride 2; stage 1 runs at the input resolution.
POOL_STRIDE = 2
KERNEL_SIZE = 3
STAGE_PREFIX = "vgg"


class VGG(Backbone):
    """VGG-16 feature extractor: ``Tensor[B, C_in, H, W] -> {"vggK": Tensor[B, C_K, H / s_K, W / s_K]}``.

    ``s_K = 2 ** (K - 1)`` (pools are floored, so odd sizes lose a row; ``size_divisibility`` is the
    largest output stride, so detectron2 pads images to make every output exact).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        width_divisor: int = 1,
        norm: str = "",
        out_features: Sequence[str] = ("vgg5",),
        stages: Sequence[tuple[int, int]] = VGG16_STAGES,
    ):
        """
        Args:
            in_channels: image channels (3, or 1 for grayscale).
            width_divisor: d; every conv has ``max(1, full width // d)`` channels.
            norm: "" (convs with bias), "BN", "GN", "SyncBN" or "FrozenBN" after every conv.
            out_features: the stages returned; stages after the last one are not built.
            stages: (convs, full width) per stage; VGG-16 by default.
        """
        super().__init__()
        if width_divisor < 1:
            raise ValueError(f"MODEL.VGG.WIDTH_DIVISOR must be >= 1, got {width_divisor}")
        names = [f"{STAGE_PREFIX}{i + 1}" for i in range(len(stages))]
        unknown = [f for f in out_features if f not in names]
        if not out_features or unknown:
            raise ValueError(f"MODEL.VGG.OUT_FEATURES={list(out_features)} must be non-empty, within {names}")
        self._out_features = list(out_features)
        self.stage_names = names[: max(names.index(f) for f in out_features) + 1]
        self._out_feature_strides: Dict[str, int] = {}
        self._out_feature_channels: Dict[str, int] = {}
        self.stage_convs: Dict[str, List[str]] = {}
        channels = in_channels
        for s, name in enumerate(self.stage_names):
            num_convs, width = stages[s]
            out = scaled_channels(width, width_divisor)
            convs = []
            for j in range(num_convs):
                conv_name = f"conv{s + 1}_{j + 1}"
                conv = Conv2d(
                    channels,
                    out,
                    kernel_size=KERNEL_SIZE,
                    padding=KERNEL_SIZE // 2,
                    bias=not norm,
                    norm=tiny_norm(norm, out),
                    activation=F.relu,
                )
                weight_init.c2_msra_fill(conv)
                self.add_module(conv_name, conv)
                convs.append(conv_name)
                channels = out
            self.stage_convs[name] = convs
            self._out_feature_strides[name] = POOL_STRIDE**s
            self._out_feature_channels[name] = out

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides[f] for f in self._out_features)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs = {}
        for s, name in enumerate(self.stage_names):
            if s > 0:
                x = F.max_pool2d(x, kernel_size=POOL_STRIDE, stride=POOL_STRIDE)
            for conv_name in self.stage_convs[name]:
                x = getattr(self, conv_name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
            for f in self._out_features
        }

    def freeze(self, freeze_at: int = 0) -> VGG:
        """Freeze stages vgg1..vgg{freeze_at} (no gradients, BatchNorm turned into FrozenBatchNorm)."""
        for name in self.stage_names[:freeze_at]:
            for conv_name in self.stage_convs[name]:
                conv = getattr(self, conv_name)
                for p in conv.parameters():
                    p.requires_grad_(False)
                if conv.norm is not None:
                    conv.norm = FrozenBatchNorm2d.convert_frozen_batchnorm(conv.norm)
        return self


def vgg(cfg: CfgNode, input_shape: ShapeSpec) -> VGG:
    """The VGG-16 of ``MODEL.VGG.{WIDTH_DIVISOR, NORM, OUT_FEATURES}``, frozen up to
    ``MODEL.BACKBONE.FREEZE_AT`` (0 = nothing, 2 = vgg1 and vgg2). ``input_shape.channels`` is
    ``len(MODEL.PIXEL_MEAN)``: 3 for RGB/BGR, 1 for grayscale (``INPUT.FORMAT "L"``)."""
    vcfg = cfg.MODEL.VGG
    model = VGG(
        input_shape.channels,
        width_divisor=vcfg.WIDTH_DIVISOR,
        norm=vcfg.NORM,
        out_features=list(vcfg.OUT_FEATURES),
    )
    return model.freeze(cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_vgg_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> VGG:
    """:func:`vgg` with, if ``MODEL.QUANTIZER.ENABLED``, the quantized ReLU on its outputs."""
    return maybe_quantize_outputs(cfg, vgg(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_vgg_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """A detectron2 FPN (max-pool top level) on :func:`vgg`; ``MODEL.FPN.IN_FEATURES`` must be within
    ``MODEL.VGG.OUT_FEATURES``. Levels are named by stride: vgg3, vgg4, vgg5 give p2, p3, p4 and the
    pooled p5 (strides 4, 8, 16, 32), each ``max(1, MODEL.FPN.OUT_CHANNELS // WIDTH_DIVISOR)`` wide."""
    return narrow_fpn(cfg, vgg(cfg, input_shape), "VGG", cfg.MODEL.VGG.WIDTH_DIVISOR)
