"""The student's mimic RoI features come from its box head's own pooling (no second ROIAlign), and equal,
value and gradient, what pooling them again gives; R-FCN students (no box pooler) pool them themselves."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import CONFIGS, STUDENT_CONFIG
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from quant_mimic.config import build_config
from quant_mimic.data.shapes_layout import render_image
from quant_mimic.data.shapes_spec import DEFAULT_SPEC


def teacher_files(folder, base, extra=""):
    config = folder / "teacher.yaml"
    config.write_text(f'_BASE_: "{base}"\nMODEL:\n  QUANTIZER:\n    ENABLED: True\n{extra}')
    torch.manual_seed(1)
    weights = folder / "teacher.pth"
    torch.save(
        {"model": build_model(build_config(str(config), ["MODEL.DEVICE", "cpu"])).state_dict()}, weights
    )
    return config, weights


def qm_model(tmp_path, config, base, rois=16, teacher_extra=""):
    teacher_config, weights = teacher_files(tmp_path, base, teacher_extra)
    opts = ["MODEL.DEVICE", "cpu", "MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(teacher_config),
            "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(weights), "MODEL.QUANT_MIMIC.NUM_ROIS_PER_IMAGE", str(rois)]  # fmt: skip
    cfg = build_config(str(config), opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.teacher.model.load_state_dict(torch.load(weights)["model"])
    return cfg, model.train()


def batch(cfg, seed=0):
    """Two rendered built-in images with their boxes, as detectron2's mapper gives them."""
    from detectron2.structures import Boxes, Instances

    rng = np.random.default_rng(seed)
    inputs = []
    for _ in range(2):
        image, objects = render_image(rng, DEFAULT_SPEC)
        if cfg.INPUT.FORMAT == "L":
            image = image.mean(axis=2, keepdims=True)
        instances = Instances(image.shape[:2])
        xywh = torch.tensor([o["bbox"] for o in objects], dtype=torch.float32)
        instances.gt_boxes = Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1))
        instances.gt_classes = (
            torch.tensor([o["category_id"] for o in objects]) % cfg.MODEL.ROI_HEADS.NUM_CLASSES
        )
        tensor = torch.as_tensor(image.transpose(2, 0, 1).copy())
        inputs.append(
            {"image": tensor, "instances": instances, "height": image.shape[0], "width": image.shape[1]}
        )
    return inputs


def features_and_grads(model, inputs, reuse: bool):
    if not reuse:
        model.reusable_box_pooler = lambda: None  # instance attribute: pool the student's RoIs again
    torch.manual_seed(0)  # the same proposal sampling in both runs
    with EventStorage():
        _, features = model.losses_and_mimic_features(inputs)
    features.student.pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.student.backbone.named_parameters() if p.grad is not None}
    return features, grads


def test_the_box_heads_pooling_is_reused_and_equals_pooling_again(tmp_path):
    cfg, model = qm_model(tmp_path, CONFIGS / "qm_R_tiny_FPN.yaml", STUDENT_CONFIG)
    assert model.reusable_box_pooler() is model.student.roi_heads.box_pooler
    inputs = batch(cfg)
    calls = []
    hook = model.pooler.register_forward_hook(lambda m, i, o: calls.append(len(o)))
    reused, grads_reused = features_and_grads(model, inputs, reuse=True)
    assert calls == [reused.teacher.shape[0]]  # the mimic pooler ran for the teacher only
    again, grads_again = features_and_grads(copy.deepcopy(model), inputs, reuse=False)
    hook.remove()
    assert reused.student.shape == again.student.shape == (32, reused.teacher.shape[1], 7, 7)
    torch.testing.assert_close(reused.student, again.student)
    torch.testing.assert_close(reused.teacher, again.teacher)
    assert grads_reused.keys() == grads_again.keys() and len(grads_reused) > 0
    for name in grads_reused:
        torch.testing.assert_close(grads_reused[name], grads_again[name])


@pytest.mark.parametrize("change", ["POOLER_SAMPLING_RATIO", "R-FCN"])
def test_a_pooler_that_differs_is_not_reused(tmp_path, change):
    if change == "R-FCN":
        config = CONFIGS / "shapes" / "qm_VGG32_RFCN.yaml"
        base = CONFIGS / "shapes" / "student_VGG32_RFCN_scratch.yaml"
        cfg, model = qm_model(tmp_path, config, base)
    else:
        cfg, model = qm_model(tmp_path, CONFIGS / "qm_R_tiny_FPN.yaml", STUDENT_CONFIG)
        model.pooler.level_poolers[0].sampling_ratio += 1
    assert model.reusable_box_pooler() is None


def test_with_every_sampled_proposal_mimicked_the_box_heads_pooling_is_used_without_a_copy(tmp_path):
    cfg, model = qm_model(tmp_path, CONFIGS / "qm_R_tiny_FPN.yaml", STUDENT_CONFIG, rois=128)
    assert cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE == 128
    seen = {}  # (a forward hook that returns a value replaces the output: these return None)
    hooks = [
        model.student.roi_heads.box_pooler.register_forward_hook(lambda m, i, o: seen.update(pooled=o)),
        model.adapter.register_forward_pre_hook(lambda m, i: seen.update(adapted=i[0])),
    ]
    reused, grads_reused = features_and_grads(model, batch(cfg), reuse=True)
    for hook in hooks:
        hook.remove()
    assert seen["adapted"] is seen["pooled"]  # the box head's own tensor, not a copy
    again, grads_again = features_and_grads(copy.deepcopy(model), batch(cfg), reuse=False)
    assert reused.student.shape[0] == seen["pooled"].shape[0] > 32  # more than 16 RoIs per image
    torch.testing.assert_close(reused.student, again.student)
    for name in grads_reused:
        torch.testing.assert_close(grads_reused[name], grads_again[name])


@pytest.mark.parametrize("same", [True, False], ids=["same_preprocessing", "other_pixel_std"])
def test_the_teacher_reads_the_students_batch_only_where_it_would_compute_the_same(tmp_path, same):
    extra = "" if same else "  PIXEL_STD: [1.0, 1.0, 1.0]\n"
    cfg, model = qm_model(tmp_path, CONFIGS / "qm_R_tiny_FPN.yaml", STUDENT_CONFIG, teacher_extra=extra)
    assert model.teacher_shares_images is same
    inputs = batch(cfg)
    seen = {}
    hooks = [
        model.student.backbone.register_forward_pre_hook(lambda m, i: seen.update(student=i[0])),
        model.teacher.model.backbone.register_forward_pre_hook(lambda m, i: seen.update(teacher=i[0])),
    ]
    features, _ = features_and_grads(model, inputs, reuse=True)
    for hook in hooks:
        hook.remove()
    own = model.teacher.model.preprocess_image(inputs).tensor  # what the teacher computes by itself
    assert (seen["teacher"] is seen["student"]) is same
    assert torch.equal(seen["teacher"], own)
    model.teacher_shares_images = not same  # the other way gives the very same teacher RoI features
    assert torch.equal(features_and_grads(model, inputs, reuse=True)[0].teacher, features.teacher) is same


def test_a_teacher_that_pads_otherwise_reads_its_own_batch(tmp_path):
    cfg, model = qm_model(tmp_path, CONFIGS / "qm_R_tiny_FPN.yaml", STUDENT_CONFIG)
    assert model.teacher.same_inputs_as(model.student)
    model.teacher.model.backbone.padding_constraints = {"square_size": 256}  # upstream detectron2's option
    assert not model.teacher.same_inputs_as(model.student)
    model.student.backbone.padding_constraints = {"square_size": 256}
    assert model.teacher.same_inputs_as(model.student)
