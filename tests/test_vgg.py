"""VGG-16 backbones (quant_mimic.modeling.backbone.vgg) and grayscale input, on CPU."""

from __future__ import annotations

import pytest
import torch
from conftest import CONFIGS, registered_mini_shapes
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.utils.events import EventStorage

from quant_mimic.config import add_quantmimic_config, build_config
from quant_mimic.modeling import VGG

STAGES = ("vgg1", "vgg2", "vgg3", "vgg4", "vgg5")
FULL_WIDTH = (64, 128, 256, 512, 512)
STRIDES = (1, 2, 4, 8, 16)
CONVS_PER_STAGE = (2, 2, 3, 3, 3)
IMAGE_SIZE = 64
# ImageNet mean / std of R, G, B in luma weights: the grayscale normalisation of the WIDER FACE configs.
GRAY_MEAN, GRAY_STD = [117.04], [57.53]
STUDENT_RFCN = CONFIGS / "shapes" / "student_VGG32_RFCN_scratch.yaml"


def make_cfg(divisor=1, norm="BN", out_features=("vgg5",), freeze_at=0, name="build_vgg_backbone"):
    cfg = get_cfg()
    add_quantmimic_config(cfg)
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    cfg.MODEL.VGG.WIDTH_DIVISOR = divisor
    cfg.MODEL.VGG.NORM = norm
    cfg.MODEL.VGG.OUT_FEATURES = list(out_features)
    return cfg


@pytest.mark.parametrize("divisor", [1, 4, 32])
def test_channels_and_strides_of_every_stage(divisor):
    backbone = build_backbone(make_cfg(divisor, out_features=STAGES))
    assert isinstance(backbone, VGG)
    shapes = backbone.output_shape()
    assert list(shapes) == list(STAGES)
    for name, full, stride in zip(STAGES, FULL_WIDTH, STRIDES):
        assert (shapes[name].channels, shapes[name].stride) == (full // divisor, stride)
    convs = [n for n, m in backbone.named_children() if n.startswith("conv")]
    assert len(convs) == sum(CONVS_PER_STAGE) == 13 and convs[0] == "conv1_1" and convs[-1] == "conv5_3"
    assert backbone.size_divisibility == 16


@pytest.mark.parametrize("divisor, channels", [(1, 512), (4, 128), (32, 16)])
def test_conv5_output_has_stride_16(divisor, channels):
    backbone = build_backbone(make_cfg(divisor, out_features=("vgg3", "vgg4", "vgg5")))
    out = backbone(torch.randn(2, 3, 96, 128))
    assert out["vgg5"].shape == (2, channels, 96 // 16, 128 // 16)
    assert out["vgg4"].shape[-2:] == (96 // 8, 128 // 8) and out["vgg3"].shape[-2:] == (96 // 4, 128 // 4)
    assert out["vgg5"].min() >= 0  # every conv is followed by a ReLU, conv5_3 included


def test_only_stages_up_to_the_last_output_are_built():
    backbone = build_backbone(make_cfg(4, out_features=("vgg3",)))
    assert not hasattr(backbone, "conv4_1") and hasattr(backbone, "conv3_3")


def test_norm_choice_and_conv_bias():
    plain = build_backbone(make_cfg(4, norm=""))
    assert plain.conv1_1.bias is not None and plain.conv1_1.norm is None
    bn = build_backbone(make_cfg(4, norm="BN"))
    assert bn.conv1_1.bias is None and isinstance(bn.conv1_1.norm, torch.nn.BatchNorm2d)
    gn = build_backbone(make_cfg(32, norm="GN"))  # 2-channel conv1: GroupNorm with gcd(32, 2) groups
    assert isinstance(gn.conv1_1.norm, torch.nn.GroupNorm) and gn.conv1_1.norm.num_groups == 2


def test_freeze_at_freezes_the_first_stages():
    backbone = build_backbone(make_cfg(4, freeze_at=2))
    for name in ("conv1_1", "conv1_2", "conv2_1", "conv2_2"):
        conv = getattr(backbone, name)
        assert not any(p.requires_grad for p in conv.parameters()) and isinstance(
            conv.norm, FrozenBatchNorm2d
        )
    assert all(p.requires_grad for p in backbone.conv3_1.parameters())


def test_bad_out_features_and_divisor_are_refused():
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        build_backbone(make_cfg(out_features=("res5",)))
    with pytest.raises(ValueError, match="WIDTH_DIVISOR"):
        build_backbone(make_cfg(divisor=0))


@pytest.mark.parametrize("stride", [1.0, 0.5])
def test_quantizer_switch_makes_outputs_multiples_of_the_stride(stride):
    cfg = make_cfg(32)
    cfg.MODEL.QUANTIZER.ENABLED = True
    cfg.MODEL.QUANTIZER.STRIDE = stride
    torch.manual_seed(0)
    quantized = build_backbone(cfg).eval()
    plain = build_backbone(make_cfg(32)).eval()
    plain.load_state_dict(quantized.state_dict())  # the quantizer adds no state
    x = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    q, f = quantized(x)["vgg5"], plain(x)["vgg5"]
    codes = q / stride
    assert torch.equal(codes, codes.round()) and q.min() >= 0
    assert (q - f).abs().max() <= stride / 2 + 1e-5  # nearest code, no clipping
    assert len(q.unique()) > 1


def test_fpn_variant_levels():
    cfg = make_cfg(8, out_features=("vgg3", "vgg4", "vgg5"), name="build_vgg_fpn_backbone")
    cfg.MODEL.FPN.IN_FEATURES = ["vgg3", "vgg4", "vgg5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 256
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "p2": (32, 4),
        "p3": (32, 8),
        "p4": (32, 16),
        "p5": (32, 32),
    }
    out = backbone(torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert out["p5"].shape == (1, 32, 2, 2)


def test_grayscale_backbone_takes_one_channel():
    backbone = build_backbone(make_cfg(4), ShapeSpec(channels=1))
    assert backbone.conv1_1.in_channels == 1
    assert backbone(torch.randn(1, 1, IMAGE_SIZE, IMAGE_SIZE))["vgg5"].shape == (1, 128, 4, 4)


def test_wider_face_configs_read_grayscale():
    cfg = build_config(str(CONFIGS / "wider_face" / "student_VGG32_RFCN_scratch.yaml"))
    assert cfg.INPUT.FORMAT == "L" and len(cfg.MODEL.PIXEL_MEAN) == len(cfg.MODEL.PIXEL_STD) == 1
    cfg.MODEL.DEVICE = "cpu"
    assert build_model(cfg).backbone.conv1_1.in_channels == 1


@pytest.fixture(scope="module")
def gray_data(tmp_path_factory):
    with registered_mini_shapes(tmp_path_factory.mktemp("gray"), "vggtest_shapes") as names:
        yield names


def test_grayscale_config_runs_end_to_end_from_dataset_mapper(gray_data):
    opts = ["INPUT.FORMAT", "L", "MODEL.PIXEL_MEAN", str(GRAY_MEAN), "MODEL.PIXEL_STD", str(GRAY_STD)]
    cfg = build_config(str(STUDENT_RFCN), opts)
    cfg.MODEL.DEVICE = "cpu"
    dicts = DatasetCatalog.get("vggtest_shapes_train")[:2]
    train_inputs = [DatasetMapper(cfg, is_train=True)(dict(d)) for d in dicts]
    assert train_inputs[0]["image"].shape[0] == 1  # HxWx1 from read_image(format="L"), as CxHxW
    model = build_model(cfg)
    with EventStorage():
        losses = model(train_inputs)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        outputs = model([DatasetMapper(cfg, is_train=False)(dict(dicts[0]))])
    assert outputs[0]["instances"].pred_boxes.tensor.shape[1] == 4
