"""The FPN of the tiny backbones: detectron2's FPN, narrowed by the backbone's width divisor."""

from __future__ import annotations

import math

from detectron2.config import CfgNode
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from ..quantizer import maybe_quantize_outputs
from .norm import norm_spec, scaled_channels


def narrow_fpn(cfg: CfgNode, bottom_up: Backbone, family: str, width_divisor: int) -> FPN:
    """A detectron2 FPN on ``bottom_up`` with ``max(1, MODEL.FPN.OUT_CHANNELS // width_divisor)``
    channels per level and a max-pool top level after the coarsest input, with the MODEL.QUANTIZER
    hook when it is enabled.

    ``MODEL.FPN.IN_FEATURES`` must be among ``MODEL.<family>.OUT_FEATURES`` (family: "RESNETS", "VGG").
    Outputs are named by stride (p2 = stride 4, ...); norm ``MODEL.FPN.NORM``, fusion
    ``MODEL.FPN.FUSE_TYPE``.
    """
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    missing = [f for f in in_features if f not in bottom_up.output_shape()]
    if not in_features or missing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES={in_features} must be non-empty and within "
            f"MODEL.{family}.OUT_FEATURES={list(cfg.MODEL[family].OUT_FEATURES)}"
        )
    top_block = LastLevelMaxPool()
    top_stride = max(bottom_up.output_shape()[f].stride for f in in_features)
    top_block.in_feature = f"p{int(math.log2(top_stride))}"  # detectron2's default "p5" assumes stride 32
    fpn = FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=scaled_channels(cfg.MODEL.FPN.OUT_CHANNELS, width_divisor),
        norm=norm_spec(cfg.MODEL.FPN.NORM),
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
    return maybe_quantize_outputs(cfg, fpn)
