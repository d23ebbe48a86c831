"""Tiny ResNet-18/34/50 backbones (the paper's "1/n" networks), with and without FPN.

Quantization Mimic (Wei et al., ECCV 2018) trains very small detectors whose every layer is
``n`` times narrower than the usual ResNet. These backbones are detectron2's own
:class:`~detectron2.modeling.backbone.resnet.ResNet` built from :class:`BasicStem`,
:class:`BasicBlock` (R18/R34) and :class:`BottleneckBlock` (R50), with every width divided
by ``cfg.MODEL.RESNETS.WIDTH_DIVISOR`` (``d``; at least one channel is always kept).

Output channels (``C // d``, floored, at least 1) and strides, with detectron2's default
full widths (``STEM_OUT_CHANNELS`` 64, ``WIDTH_PER_GROUP`` 64, ``RES2_OUT_CHANNELS`` 256)::

    feature  stride   R18 / R34   R50
    stem          4     64 / d     64 / d
    res2          4     64 / d    256 / d   (bottleneck 64 / d)
    res3          8    128 / d    512 / d   (bottleneck 128 / d)
    res4         16    256 / d   1024 / d   (bottleneck 256 / d)
    res5         32    512 / d   2048 / d   (bottleneck 512 / d)

With FPN (``build_tiny_resnet_fpn_backbone``): p2..p6 at strides 4, 8, 16, 32, 64, each with
``max(1, MODEL.FPN.OUT_CHANNELS // d)`` channels.

Both builders are registered in detectron2's ``BACKBONE_REGISTRY``; select them with
``cfg.MODEL.BACKBONE.NAME = "build_tiny_resnet_backbone"`` (or ``..._fpn_backbone``) in a config
with QuantMimic's keys (:func:`quant_mimic.config.add_quantmimic_config`; ``MODEL.RESNETS.WIDTH_DIVISOR``).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

from detectron2.config import CfgNode
from detectron2.layers import CNNBlockBase, ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet

from ..quantizer import maybe_quantize_outputs
from .narrow_fpn import narrow_fpn
from .norm import norm_spec, scaled_channels

__all__ = [
    "BLOCKS_PER_STAGE",
    "build_tiny_resnet_backbone",
    "build_tiny_resnet_fpn_backbone",
]

# ResNet architecture definition: residual blocks in res2..res5 for each supported depth.
BLOCKS_PER_STAGE: Dict[int, Sequence[int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
}
# Depths built from BasicBlock (two 3x3 convs, no channel expansion); the rest use BottleneckBlock.
BASIC_BLOCK_DEPTHS = (18, 34)
# A bottleneck block's output is this many times wider than its 3x3 "bottleneck" conv.
BOTTLENECK_EXPANSION = 4
# Residual stages and the index detectron2 gives them ("res2" is stage 2, "stem" is stage 1).
STAGE_NAMES = ("res2", "res3", "res4", "res5")
FIRST_STAGE_INDEX = 2
# Each stage after res2 halves the resolution (first block strided) and doubles the width.
STAGE_STRIDE = 2
STAGE_WIDTH_GROWTH = 2


def _stage_index(feature: str) -> int:
    if feature == "stem":
        return FIRST_STAGE_INDEX - 1
    if feature not in STAGE_NAMES:
        raise ValueError(f"Unknown tiny ResNet feature {feature!r}; expected 'stem' or one of {STAGE_NAMES}")
    return FIRST_STAGE_INDEX + STAGE_NAMES.index(feature)


@BACKBONE_REGISTRY.register()
def build_tiny_resnet_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> ResNet:
    """The tiny ResNet of :func:`tiny_resnet` with, if ``MODEL.QUANTIZER.ENABLED``, the quantized ReLU
    on its outputs."""
    return maybe_quantize_outputs(cfg, tiny_resnet(cfg, input_shape))


def tiny_resnet(cfg: CfgNode, input_shape: ShapeSpec) -> ResNet:
    """Build a ResNet-18/34/50 whose widths are divided by ``MODEL.RESNETS.WIDTH_DIVISOR``.

    Config keys: ``MODEL.RESNETS.{DEPTH, NORM, OUT_FEATURES, STEM_OUT_CHANNELS,
    RES2_OUT_CHANNELS, WIDTH_PER_GROUP, STRIDE_IN_1X1, WIDTH_DIVISOR}`` and
    ``MODEL.BACKBONE.FREEZE_AT`` (0 = nothing frozen, 1 = stem, 2 = stem and res2, ...).
    All widths in the config are full-width values; ``d = WIDTH_DIVISOR`` divides them here.

    Channels / strides of the outputs (with detectron2's default widths)::

        stem   64/d                    stride 4
        res2   64/d  (R50: 256/d)      stride 4
        res3  128/d  (R50: 512/d)      stride 8
        res4  256/d  (R50: 1024/d)     stride 16
        res5  512/d  (R50: 2048/d)     stride 32

    For R18/R34 (basic blocks, no expansion) the res2 width is ``RES2_OUT_CHANNELS``; its
    R50-layout value ``BOTTLENECK_EXPANSION * WIDTH_PER_GROUP`` (detectron2's default 256) is
    read as the basic-block width ``WIDTH_PER_GROUP`` (64), so the default config gives a
    standard R18/R34. For R50 the bottleneck width is ``WIDTH_PER_GROUP`` and the output width
    ``RES2_OUT_CHANNELS``. Only stages up to the last one named in ``OUT_FEATURES`` are built.

    Norm: ``MODEL.RESNETS.NORM`` via :func:`.norm.tiny_norm` ("BN", "SyncBN", "GN", "FrozenBN"; see
    there why FrozenBN is for pretrained backbones only). ResNeXt groups, deformable convs and
    a dilated res5 are not supported.

    Returns:
        ResNet: a detectron2 ResNet whose ``output_shape()`` lists ``OUT_FEATURES``.
    """
    rcfg = cfg.MODEL.RESNETS
    depth = rcfg.DEPTH
    if depth not in BLOCKS_PER_STAGE:
        raise ValueError(
            f"Tiny ResNet supports MODEL.RESNETS.DEPTH in {sorted(BLOCKS_PER_STAGE)}, got {depth}"
        )
    if rcfg.NUM_GROUPS != 1:
        raise ValueError("Tiny ResNet needs MODEL.RESNETS.NUM_GROUPS = 1 (no ResNeXt)")
    if rcfg.RES5_DILATION != 1:
        raise ValueError("Tiny ResNet needs MODEL.RESNETS.RES5_DILATION = 1")
    if any(rcfg.DEFORM_ON_PER_STAGE):
        raise ValueError("Tiny ResNet does not support MODEL.RESNETS.DEFORM_ON_PER_STAGE")

    divisor = rcfg.WIDTH_DIVISOR
    norm = norm_spec(rcfg.NORM)
    out_features: List[str] = list(rcfg.OUT_FEATURES)
    basic = depth in BASIC_BLOCK_DEPTHS

    stem = BasicStem(
        in_channels=input_shape.channels,
        out_channels=scaled_channels(rcfg.STEM_OUT_CHANNELS, divisor),
        norm=norm,
    )

    bottleneck_channels = rcfg.WIDTH_PER_GROUP
    out_channels = rcfg.RES2_OUT_CHANNELS
    if basic and out_channels == BOTTLENECK_EXPANSION * bottleneck_channels:
        out_channels = bottleneck_channels
    in_channels = stem.out_channels

    last_stage = max(_stage_index(f) for f in out_features)
    stages: List[List[CNNBlockBase]] = []
    for i, num_blocks in enumerate(BLOCKS_PER_STAGE[depth][: max(0, last_stage - FIRST_STAGE_INDEX + 1)]):
        first_stride = 1 if i == 0 else STAGE_STRIDE
        stage_kwargs = {
            "num_blocks": num_blocks,
            "stride_per_block": [first_stride] + [1] * (num_blocks - 1),
            "in_channels": in_channels,
            "out_channels": scaled_channels(out_channels, divisor),
            "norm": norm,
        }
        if basic:
            stage_kwargs["block_class"] = BasicBlock
        else:
            stage_kwargs["block_class"] = BottleneckBlock
            stage_kwargs["bottleneck_channels"] = scaled_channels(bottleneck_channels, divisor)
            stage_kwargs["stride_in_1x1"] = rcfg.STRIDE_IN_1X1
        stages.append(ResNet.make_stage(**stage_kwargs))
        in_channels = stage_kwargs["out_channels"]
        out_channels *= STAGE_WIDTH_GROWTH
        bottleneck_channels *= STAGE_WIDTH_GROWTH
    return ResNet(stem, stages, out_features=out_features).freeze(cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_tiny_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """Build a detectron2 FPN (with a max-pool P6) on top of :func:`build_tiny_resnet_backbone`.

    ``MODEL.FPN.IN_FEATURES`` (e.g. res2..res5) must be among ``MODEL.RESNETS.OUT_FEATURES``.
    The FPN is narrowed with the backbone: every level has
    ``max(1, MODEL.FPN.OUT_CHANNELS // WIDTH_DIVISOR)`` channels (256 -> 256/d). With
    in-features res2..res5 the outputs are p2, p3, p4, p5, p6 at strides 4, 8, 16, 32, 64.
    Norm: ``MODEL.FPN.NORM`` via :func:`.norm.tiny_norm` ("" = none, with conv biases);
    fusion: ``MODEL.FPN.FUSE_TYPE``.

    Returns:
        FPN: a detectron2 FPN whose ``bottom_up`` is the tiny ResNet.
    """
    return narrow_fpn(cfg, tiny_resnet(cfg, input_shape), "RESNETS", cfg.MODEL.RESNETS.WIDTH_DIVISOR)
