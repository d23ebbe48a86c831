"""Tiny ResNet-18/34/50 backbones (quant_mimic.modeling.backbone.tiny_resnet), on CPU."""

from __future__ import annotations

import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.fpn import FPN
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock, ResNet
from torch import nn

from quant_mimic.config import add_quantmimic_config
from quant_mimic.modeling import (
    build_tiny_resnet_backbone,
    build_tiny_resnet_fpn_backbone,
    scaled_channels,
    tiny_norm,
)

DEPTHS = (18, 34, 50)
DIVISORS = (1, 4, 16, 32)
STAGES = ("res2", "res3", "res4", "res5")
FPN_LEVELS = ("p2", "p3", "p4", "p5", "p6")
# Expected full-width output channels of res2..res5, and the strides of res2..res5 / p2..p6.
FULL_WIDTH = {18: (64, 128, 256, 512), 34: (64, 128, 256, 512), 50: (256, 512, 1024, 2048)}
RES_STRIDES = (4, 8, 16, 32)
FPN_STRIDES = (4, 8, 16, 32, 64)
FPN_OUT_CHANNELS = 256
IMAGE_SIZE = 64
# A subset of (depth, divisor) that also runs a forward pass, to keep the suite fast.
FORWARD_CASES = [(18, 1), (18, 32), (34, 4), (50, 16), (50, 32)]
INPUT_SHAPE = ShapeSpec(channels=3)


def make_cfg(depth=18, divisor=1, norm="BN", fpn_norm="", freeze_at=0, name="build_tiny_resnet_backbone"):
    cfg = add_quantmimic_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.WIDTH_DIVISOR = divisor
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.OUT_FEATURES = list(STAGES)
    cfg.MODEL.FPN.IN_FEATURES = list(STAGES)
    cfg.MODEL.FPN.OUT_CHANNELS = FPN_OUT_CHANNELS
    cfg.MODEL.FPN.NORM = fpn_norm
    return cfg


def expected_res(depth, divisor):
    return {
        name: (max(1, full // divisor), stride)
        for name, full, stride in zip(STAGES, FULL_WIDTH[depth], RES_STRIDES)
    }


def expected_fpn(divisor):
    return {
        name: (max(1, FPN_OUT_CHANNELS // divisor), stride) for name, stride in zip(FPN_LEVELS, FPN_STRIDES)
    }


def shapes(backbone):
    return {k: (v.channels, v.stride) for k, v in backbone.output_shape().items()}


def run(backbone, train=False):
    backbone.train(train)
    with torch.no_grad():
        return backbone(torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE))


def assert_outputs_match(outputs, expected):
    assert list(outputs) == list(expected)
    for name, (channels, stride) in expected.items():
        assert tuple(outputs[name].shape) == (1, channels, IMAGE_SIZE // stride, IMAGE_SIZE // stride), name
        assert torch.isfinite(outputs[name]).all(), name


def num_params(module):
    return sum(p.numel() for p in module.parameters())


def test_config_key_added_once():
    cfg = get_cfg()
    assert "WIDTH_DIVISOR" not in cfg.MODEL.RESNETS
    add_quantmimic_config(cfg)
    assert cfg.MODEL.RESNETS.WIDTH_DIVISOR == 1
    cfg.MODEL.RESNETS.WIDTH_DIVISOR = 16
    add_quantmimic_config(cfg)
    assert cfg.MODEL.RESNETS.WIDTH_DIVISOR == 16


def test_expected_table_spot_values():
    # The table itself, written out for the paper's 1/n networks.
    assert expected_res(18, 16) == {"res2": (4, 4), "res3": (8, 8), "res4": (16, 16), "res5": (32, 32)}
    assert expected_res(50, 32) == {"res2": (8, 4), "res3": (16, 8), "res4": (32, 16), "res5": (64, 32)}
    assert scaled_channels(64, 128) == 1
    assert scaled_channels(256, 4) == 64
    with pytest.raises(ValueError):
        scaled_channels(64, 0)


@pytest.mark.parametrize("divisor", DIVISORS)
@pytest.mark.parametrize("depth", DEPTHS)
def test_output_shape_table(depth, divisor):
    backbone = build_tiny_resnet_backbone(make_cfg(depth, divisor), INPUT_SHAPE)
    assert isinstance(backbone, ResNet)
    assert shapes(backbone) == expected_res(depth, divisor)
    assert backbone.stem.out_channels == max(1, 64 // divisor)
    block_class = BasicBlock if depth in (18, 34) else BottleneckBlock
    blocks = [b for name in STAGES for b in getattr(backbone, name)]
    assert all(type(b) is block_class for b in blocks)
    assert len(blocks) == {18: 8, 34: 16, 50: 16}[depth]
    if depth == 50:
        # Bottleneck width is a quarter of the output width in every stage.
        for name, full in zip(STAGES, FULL_WIDTH[50]):
            assert getattr(backbone, name)[0].conv2.out_channels == max(1, full // 4 // divisor)


@pytest.mark.parametrize("depth,divisor", FORWARD_CASES)
def test_forward_shapes(depth, divisor):
    backbone = build_tiny_resnet_backbone(make_cfg(depth, divisor), INPUT_SHAPE)
    assert_outputs_match(run(backbone), expected_res(depth, divisor))


@pytest.mark.parametrize("divisor", DIVISORS)
@pytest.mark.parametrize("depth", DEPTHS)
def test_fpn_output_shape(depth, divisor):
    cfg = make_cfg(depth, divisor, name="build_tiny_resnet_fpn_backbone")
    backbone = build_tiny_resnet_fpn_backbone(cfg, INPUT_SHAPE)
    assert isinstance(backbone, FPN)
    assert shapes(backbone) == expected_fpn(divisor)
    assert shapes(backbone.bottom_up) == expected_res(depth, divisor)
    assert backbone.size_divisibility == 32


@pytest.mark.parametrize("depth,divisor", FORWARD_CASES)
def test_fpn_forward_shapes(depth, divisor):
    cfg = make_cfg(depth, divisor, name="build_tiny_resnet_fpn_backbone")
    backbone = build_tiny_resnet_fpn_backbone(cfg, INPUT_SHAPE)
    assert_outputs_match(run(backbone), expected_fpn(divisor))


def test_fpn_needs_backbone_features():
    cfg = make_cfg(18, 16, name="build_tiny_resnet_fpn_backbone")
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res4", "res5"]
    with pytest.raises(ValueError, match="IN_FEATURES"):
        build_tiny_resnet_fpn_backbone(cfg, INPUT_SHAPE)


def test_tiny_norm():
    gn4 = tiny_norm("GN", 4)
    assert isinstance(gn4, nn.GroupNorm) and (gn4.num_groups, gn4.num_channels) == (4, 4)
    gn48 = tiny_norm("GN", 48)
    assert (gn48.num_groups, gn48.num_channels) == (16, 48)
    assert tiny_norm("GN", 256).num_groups == 32
    assert tiny_norm("GN", 1).num_groups == 1
    assert tiny_norm("", 4) is None
    assert isinstance(tiny_norm("BN", 4), nn.BatchNorm2d)
    assert isinstance(tiny_norm("FrozenBN", 4), FrozenBatchNorm2d)
    assert isinstance(tiny_norm("SyncBN", 4), nn.SyncBatchNorm)


NORM_TYPES = {
    "BN": nn.BatchNorm2d,
    "GN": nn.GroupNorm,
    "SyncBN": nn.SyncBatchNorm,
    "FrozenBN": FrozenBatchNorm2d,
}


@pytest.mark.parametrize("norm", list(NORM_TYPES))
@pytest.mark.parametrize("depth", (18, 50))
def test_each_norm_builds_and_runs(norm, depth):
    divisor = 16  # R18 res2 / R50 res2 bottleneck have 4 channels: GroupNorm(32, 4) is impossible
    cfg = make_cfg(depth, divisor, norm=norm, fpn_norm=norm, name="build_tiny_resnet_fpn_backbone")
    backbone = build_backbone(cfg)
    norms = [m for m in backbone.modules() if isinstance(m, tuple(NORM_TYPES.values()))]
    assert norms and all(type(m) is NORM_TYPES[norm] for m in norms)
    if norm == "GN":
        assert all(m.num_groups == math.gcd(32, m.num_channels) for m in norms)
        assert any(m.num_channels == 4 and m.num_groups == 4 for m in norms)
        # FPN convs with a norm have no bias; 16-channel FPN GN uses 16 groups.
        assert backbone.fpn_output2.bias is None and backbone.fpn_output2.norm.num_groups == 16
    # Train mode: batch statistics (BN, SyncBN outside distributed training) or per-sample GN.
    outputs = run(backbone, train=True)
    assert_outputs_match(outputs, expected_fpn(divisor))
    assert shapes(backbone.bottom_up) == expected_res(depth, divisor)


def test_fpn_without_norm_has_bias():
    backbone = build_backbone(make_cfg(18, 16, name="build_tiny_resnet_fpn_backbone"))
    assert backbone.fpn_output2.norm is None and backbone.fpn_output2.bias is not None


def test_param_count_shrinks_quadratically():
    full = num_params(build_tiny_resnet_backbone(make_cfg(18, 1), INPUT_SHAPE))
    tiny = num_params(build_tiny_resnet_backbone(make_cfg(18, 16), INPUT_SHAPE))
    # = torchvision resnet18 minus its 1000-way fc layer (11,689,512 - 513,000).
    assert full == 11_176_512
    assert full / tiny > 100
    quarter = num_params(build_tiny_resnet_backbone(make_cfg(18, 4), INPUT_SHAPE))
    assert full > quarter > tiny


@pytest.mark.parametrize(
    "name,expected_type",
    [("build_tiny_resnet_backbone", ResNet), ("build_tiny_resnet_fpn_backbone", FPN)],
)
def test_registry_builds(name, expected_type):
    cfg = make_cfg(34, 4, name=name)
    backbone = build_backbone(cfg)
    assert isinstance(backbone, expected_type)
    expected = expected_res(34, 4) if expected_type is ResNet else expected_fpn(4)
    assert shapes(backbone) == expected


def test_default_res2_width_for_basic_blocks():
    # detectron2's default RES2_OUT_CHANNELS (256) is the R50 value; R18 reads it as 64.
    cfg = add_quantmimic_config(get_cfg())
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    assert cfg.MODEL.RESNETS.RES2_OUT_CHANNELS == 256
    assert shapes(build_tiny_resnet_backbone(cfg, INPUT_SHAPE)) == {"res5": (512, 32)}
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64  # detectron2's required R18 value
    assert shapes(build_tiny_resnet_backbone(cfg, INPUT_SHAPE)) == {"res5": (512, 32)}


def test_only_needed_stages_are_built():
    cfg = make_cfg(18, 16)
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3"]
    backbone = build_tiny_resnet_backbone(cfg, INPUT_SHAPE)
    children = [name for name, _ in backbone.named_children()]
    assert "res3" in children and "res4" not in children and "res5" not in children
    assert_outputs_match(run(backbone), {"res3": (8, 8)})


def test_unsupported_depth_raises():
    with pytest.raises(ValueError, match="DEPTH"):
        build_tiny_resnet_backbone(make_cfg(101, 16), INPUT_SHAPE)


@pytest.mark.parametrize("norm", ("BN", "GN"))
def test_freeze_at(norm):
    frozen = build_backbone(make_cfg(18, 16, norm=norm, freeze_at=2))
    for name, param in frozen.named_parameters():
        assert param.requires_grad == (not name.startswith(("stem.", "res2."))), name
    frozen_names = [n for n, p in frozen.named_parameters() if not p.requires_grad]
    assert "stem.conv1.weight" in frozen_names and "res2.0.conv1.weight" in frozen_names
    if norm == "BN":
        # detectron2's freeze turns the frozen stages' BN into FrozenBN (which holds buffers only).
        assert isinstance(frozen.stem.conv1.norm, FrozenBatchNorm2d)
        assert isinstance(frozen.res3[0].conv1.norm, nn.BatchNorm2d)
    trainable = build_backbone(make_cfg(18, 16, norm=norm, freeze_at=0))
    assert all(p.requires_grad for p in trainable.parameters())
    assert num_params(trainable) > 0
