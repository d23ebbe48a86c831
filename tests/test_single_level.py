"""The single-level Faster R-CNN configs (paper's VOC setting): one stride-16 map (res4) for the RPN and
ROIAlign, the paper's anchors, and a Quantization Mimic training step on it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import CONFIGS
from detectron2.data.detection_utils import annotations_to_instances
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.solver import build_optimizer
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage
from test_configs import ALL_CONFIGS

from quant_mimic.config import build_config
from quant_mimic.data import MINI_SPEC, render_image
from quant_mimic.modeling import QuantMimicRCNN

SINGLE_LEVEL_CONFIGS = [name for name in ALL_CONFIGS if "_single" in name]
QM_CONFIGS = [name for name in SINGLE_LEVEL_CONFIGS if "/qm_" in name]
FEATURE, STRIDE = "res4", 16
# Paper (VOC): anchor areas (4, 8, 16 x stride)^2 and aspect ratios 2:1, 3:1 (height / width).
ANCHOR_SIZES, ANCHOR_RATIOS = (64, 128, 256), (2.0, 3.0)


def test_each_data_set_has_the_five_single_level_configs():
    for data in ("shapes", "voc"):
        expected = {
            f"{data}/{family}.yaml"
            for family in (
                "teacher_R18_single",
                "teacher_R18_single_quant",
                "student_R18_16_single_scratch",
                "mimic_R18_16_single",
                "qm_R18_16_single",
            )
        }
        assert expected <= set(SINGLE_LEVEL_CONFIGS)


def cpu_config(name: str):
    cfg = build_config(str(CONFIGS / name), ["MODEL.DEVICE", "cpu"])
    cfg.freeze()
    return cfg


def assert_single_level(model: GeneralizedRCNN) -> None:
    """One stride-16 map feeds the RPN and the ROI heads; cell anchors are the paper's sizes x ratios."""
    assert {k: v.stride for k, v in model.backbone.output_shape().items()} == {FEATURE: STRIDE}
    assert model.proposal_generator.in_features == [FEATURE]
    assert model.roi_heads.in_features == [FEATURE]
    anchor_generator = model.proposal_generator.anchor_generator
    (cell_anchors,) = list(anchor_generator.cell_anchors)
    assert anchor_generator.strides == [STRIDE]
    x0, y0, x1, y1 = cell_anchors.unbind(1)  # Tensor[A, 4] each, centred at 0, px
    w, h = x1 - x0, y1 - y0
    got = {(round(math.sqrt(a)), round(r, 3)) for a, r in zip((w * h).tolist(), (h / w).tolist())}
    assert got == {(s, r) for s in ANCHOR_SIZES for r in ANCHOR_RATIOS}


@pytest.mark.parametrize("name", SINGLE_LEVEL_CONFIGS)
def test_config_builds_a_single_level_model(name):
    cfg = cpu_config(name)
    model = build_model(cfg)
    if isinstance(model, QuantMimicRCNN):
        assert_single_level(model.student)
        assert_single_level(model.teacher.model)
        assert model.in_features == [FEATURE] and model.pooler.level_poolers[0].spatial_scale == 1 / STRIDE
    else:
        assert_single_level(model)


def tiny_batch(num_images: int = 2) -> list[dict]:
    """Built-in shapes images (192 px, BGR) with their boxes, as detectron2's mapper hands them over."""
    batch = []
    for i in range(num_images):
        rgb, objects = render_image(np.random.default_rng(i), MINI_SPEC)
        annotations = [
            {"bbox": o["bbox"], "bbox_mode": BoxMode.XYWH_ABS, "category_id": o["category_id"] - 1}
            for o in objects
        ]
        image = torch.from_numpy(np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1)))
        batch.append({"image": image, "instances": annotations_to_instances(annotations, rgb.shape[:2])})
    return batch


@pytest.mark.parametrize("name", QM_CONFIGS)
def test_one_quant_mimic_step_trains_the_students_backbone(name):
    cfg = cpu_config(name)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    student_backbone = [p for p in model.student.backbone.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in student_backbone]
    teacher_before = [p.detach().clone() for p in model.teacher.parameters()]

    with EventStorage(0):
        losses = model(tiny_batch())
    loss_mimic = losses["loss_mimic"]
    assert torch.isfinite(loss_mimic) and loss_mimic.item() > 0
    mimic_grads = torch.autograd.grad(loss_mimic, student_backbone, retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in mimic_grads)  # the mimic loss reaches res4
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()

    assert any(not torch.equal(b, p) for b, p in zip(before, student_backbone))
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(torch.equal(b, p) for b, p in zip(teacher_before, model.teacher.parameters()))
