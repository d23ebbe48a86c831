"""quant_mimic_tools.convert: torchvision ImageNet checkpoints -> this project's backbones, via DetectionCheckpointer."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import CONFIGS
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from quant_mimic.config import build_config
from quant_mimic.errors import QuantMimicInputError
from quant_mimic_tools.convert import check_target_config, convert, main, vgg16_feature_names

R18_FPN = CONFIGS / "shapes" / "teacher_R18_FPN.yaml"  # full-width ResNet-18, BN, FPN: backbone.bottom_up.*
VGG_RFCN = CONFIGS / "shapes" / "teacher_VGG4_RFCN.yaml"  # single map: backbone.*
FULL_VGG = ["MODEL.VGG.WIDTH_DIVISOR", "1", "MODEL.VGG.NORM", ""]


def poisoned(module: torch.nn.Module) -> torch.nn.Module:
    """Fill every float parameter and buffer with NaN, so anything left unloaded shows."""
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.fill_(float("nan"))
    return module


def unloaded(module: torch.nn.Module) -> list[str]:
    return [k for k, t in module.state_dict().items() if t.is_floating_point() and t.isnan().any()]


def build(cfg_file, opts=()):
    cfg = build_config(str(cfg_file), list(opts))
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


def test_resnet18_pkl_loads_into_the_fpn_bottom_up(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # non-trivial BN statistics
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    out = tmp_path / "R18.pkl"
    args = ["--model", "resnet18", "--input", str(tmp_path / "resnet18.pth"), "--output", str(out)]
    assert main([*args, "--config-file", str(R18_FPN)]) == 0

    model = build(R18_FPN)
    bottom_up = poisoned(model.backbone.bottom_up)
    DetectionCheckpointer(model).load(str(out))
    assert unloaded(bottom_up) == []  # every backbone tensor came from the file
    assert torch.equal(bottom_up.stem.conv1.weight, tv.conv1.weight)
    assert torch.equal(bottom_up.stem.conv1.norm.running_mean, tv.bn1.running_mean)
    assert torch.equal(bottom_up.res3[0].shortcut.weight, tv.layer2[0].downsample[0].weight)
    assert torch.equal(bottom_up.res5[1].conv2.norm.running_var, tv.layer4[1].bn2.running_var)
    assert torch.equal(bottom_up.res5[1].conv2.norm.weight, tv.layer4[1].bn2.weight)


def test_vgg16_pth_loads_into_the_single_map_backbone(tmp_path):
    torch.manual_seed(0)
    state = torchvision.models.vgg16(weights=None).state_dict()
    # the two 4096-wide fc layers (120M values) are left out to keep the file small; the converter drops
    # every classifier layer, as the kept classifier.6 shows
    state = {k: v for k, v in state.items() if not k.startswith(("classifier.0", "classifier.3"))}
    torch.save(state, tmp_path / "vgg16.pth")
    out = tmp_path / "VGG16.pth"
    args = ["--model", "vgg16", "--input", str(tmp_path / "vgg16.pth"), "--output", str(out)]
    assert main(args) == 0

    model = build(VGG_RFCN, FULL_VGG)
    backbone = poisoned(model.backbone)
    DetectionCheckpointer(model).load(str(out))
    assert unloaded(backbone) == []
    assert torch.equal(backbone.conv1_1.weight, state["features.0.weight"])
    assert torch.equal(backbone.conv3_3.bias, state["features.14.bias"])
    assert torch.equal(backbone.conv5_3.weight, state["features.28.weight"])
    assert len(vgg16_feature_names()) == 13


def test_grayscale_sums_the_first_conv_over_rgb():
    tv = torchvision.models.resnet18(weights=None).state_dict()
    gray = convert("resnet18", tv, grayscale=True)
    assert gray["stem.conv1.weight"].shape == (64, 1, 7, 7)
    assert torch.allclose(gray["stem.conv1.weight"], tv["conv1.weight"].sum(dim=1, keepdim=True))
    assert "fc.weight" not in gray and not any(k.startswith("fc") for k in gray)


def test_tiny_targets_and_mismatched_models_are_refused(tmp_path, capsys):
    with pytest.raises(QuantMimicInputError, match="width divisor 16, but ImageNet weights exist only"):
        check_target_config("resnet18", str(CONFIGS / "shapes" / "student_R18_16_FPN_scratch.yaml"))
    with pytest.raises(QuantMimicInputError, match="width divisor 4"):
        check_target_config("vgg16", str(VGG_RFCN))
    with pytest.raises(QuantMimicInputError, match="not a resnet50 backbone"):
        check_target_config("resnet50", str(VGG_RFCN))
    with pytest.raises(QuantMimicInputError, match="MODEL.RESNETS.DEPTH 18"):
        check_target_config("resnet34", str(R18_FPN))
    with pytest.raises(QuantMimicInputError, match="not a torchvision vgg16 key"):
        convert("vgg16", torchvision.models.resnet18(weights=None).state_dict())
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    config = str(CONFIGS / "shapes" / "student_R18_16_FPN_scratch.yaml")
    args = ["--model", "resnet18", "--input", str(tmp_path / "r18.pth"), "--output", str(tmp_path / "x.pkl")]
    assert main([*args, "--config-file", config]) == 2
    assert "convert: error:" in capsys.readouterr().err and not (tmp_path / "x.pkl").exists()
