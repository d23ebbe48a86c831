"""Q on post-ReLU features of the FPN detector: the teacher quantized on its bottom-up stages
(MODEL.QUANTIZER.PLACEMENT "bottom_up") and the student mimicking those stages (MODEL.QUANT_MIMIC.IN_FEATURES
res2..res5), each RoI pooled from the stage of its FPN level, one adaptation conv per stage."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import CONFIGS, STUDENT_CONFIG
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from test_mimic_pooling import batch, qm_model
from torchvision.ops import roi_align

from quant_mimic.config import build_config
from quant_mimic.modeling.meta_arch import BOTTOM_UP
from quant_mimic.modeling.mimic_loss import MimicFeatures, MimicLoss
from quant_mimic.modeling.quantizer import Quantizer, quantized_part

QM_BOTTOM_UP = CONFIGS / "shapes" / "qm_bottom_up_R18_16_FPN.yaml"
STAGES = ["res2", "res3", "res4", "res5"]
STRIDES = [4, 8, 16, 32]
BOTTOM_UP_TEACHER = '    PLACEMENT: "bottom_up"\n  RESNETS:\n    WIDTH_DIVISOR: 4\n'  # ResNet18-1-4


def test_a_bottom_up_teacher_quantizes_its_stages_and_not_its_fpn_outputs():
    cfg = build_config(str(STUDENT_CONFIG), ["MODEL.DEVICE", "cpu", "MODEL.QUANTIZER.ENABLED", "True",
                                             "MODEL.QUANTIZER.PLACEMENT", "bottom_up"])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert quantized_part(cfg, model.backbone) is model.backbone.bottom_up
    seen = {}
    model.backbone.bottom_up.register_forward_hook(lambda m, i, out: seen.update(out))
    with torch.no_grad():
        outputs = model.backbone(torch.randn(1, 3, 64, 64) * 50)
    for name in STAGES:  # what the FPN's lateral convs read: codes {0, 1, 2, ...}
        stage = seen[name]
        assert torch.equal(stage, stage.round()) and stage.min() >= 0 and stage.max() > 0, name
    assert any(p.min() < 0 for p in outputs.values())  # the FPN outputs stay linear
    single = build_config(str(CONFIGS / "shapes" / "student_R18_16_single_scratch.yaml"),
                          ["MODEL.DEVICE", "cpu", "MODEL.QUANTIZER.PLACEMENT", "bottom_up"])  # fmt: skip
    with pytest.raises(ValueError, match="needs an FPN backbone"):
        quantized_part(single, build_model(single).backbone)


def canonical_level(box: torch.Tensor) -> int:
    """The FPN level index (0 = res2) of a box, detectron2's rule: floor(4 + log2(sqrt(area) / 224))."""
    side = math.sqrt(float((box[2] - box[0]) * (box[3] - box[1])))
    return min(max(math.floor(4 + math.log2(side / 224 + 1e-8)), 2), 5) - 2


def test_rois_are_pooled_from_the_stage_of_their_level_with_one_adapter_each(tmp_path):
    cfg, model = qm_model(tmp_path, QM_BOTTOM_UP, STUDENT_CONFIG, rois=16, teacher_extra=BOTTOM_UP_TEACHER)
    assert model.part == BOTTOM_UP and model.in_features == STAGES and len(model.adapter) == 4
    assert [a.in_channels for a in model.adapter] == [4, 8, 16, 32]  # ResNet18-1-16 stages
    assert [a.out_channels for a in model.adapter] == [16, 32, 64, 128]  # the teacher's
    assert model.reusable_box_pooler() is None  # the box head pools p2..p5, not these
    inputs = batch(cfg)
    seen = {}
    model.student.roi_heads.register_forward_hook(lambda m, i, out: seen.__setitem__("sampled", out[0]))
    torch.manual_seed(0)
    with EventStorage():
        losses, features = model.losses_and_mimic_features(inputs)
    assert isinstance(features.teacher, tuple) and len(features.teacher) == len(features.student) == 4
    boxes = [p.proposal_boxes[:16] for p in seen["sampled"]]
    all_boxes = torch.cat([b.tensor for b in boxes])
    image_of = torch.cat([torch.full((len(b),), i) for i, b in enumerate(boxes)])
    levels = torch.tensor([canonical_level(b) for b in all_boxes])
    assert sum(len(t) for t in features.teacher) == len(all_boxes) == 32

    images = model.student.preprocess_image(inputs).tensor
    with torch.no_grad():
        teacher_maps = model.teacher.model.backbone.bottom_up(images)
        student_maps = model.student.backbone.bottom_up(images)
    for level, (stage, stride) in enumerate(zip(STAGES, STRIDES)):
        rois = torch.cat([image_of[levels == level, None].float(), all_boxes[levels == level]], dim=1)
        expected_t = roi_align(teacher_maps[stage], rois, 7, 1.0 / stride, 0, aligned=True)
        expected_s = roi_align(student_maps[stage], rois, 7, 1.0 / stride, 0, aligned=True)
        assert features.teacher[level].shape == (len(rois), model.adapter[level].out_channels, 7, 7)
        assert torch.allclose(features.teacher[level], expected_t, atol=1e-5), stage
        # the teacher's stages are quantized where the paper quantizes: on the code book
        assert (
            torch.equal(teacher_maps[stage], teacher_maps[stage].round()) and teacher_maps[stage].min() >= 0
        )
        with torch.no_grad():
            assert torch.allclose(features.student[level], model.adapter[level](expected_s), atol=1e-5), stage

    # the mimic loss reaches the student's stages (down to its stem) and every adapter, not the teacher
    loss = model.mimic_loss(features)["loss_mimic"]
    assert loss > 0
    loss.backward()
    used = [level for level in range(4) if (levels == level).any()]
    assert all(model.adapter[level].weight.grad.abs().sum() > 0 for level in used)
    assert model.student.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(torch.isfinite(v) for v in losses.values())


def test_the_loss_over_levels_is_each_levels_per_element_sum_over_2n():
    torch.manual_seed(0)
    t = (torch.rand(3, 2, 2, 2) * 4, torch.rand(5, 3, 2, 2) * 4)
    s = (torch.randn(3, 2, 2, 2) * 2, torch.randn(5, 3, 2, 2) * 2)
    loss = MimicLoss(weight=0.5, normalize="per_element", quantizer=Quantizer(0.5), quantize_teacher=True,
                     quantize_student=True, feature_relu=True, match_threshold=0.3)  # fmt: skip
    out, ratio = loss.loss_and_matching_ratio(MimicFeatures(t, s))
    q = Quantizer(0.5)
    sums = [((q(tl) - q(torch.relu(sl))) ** 2).sum() / tl[0].numel() for tl, sl in zip(t, s)]
    assert out["loss_mimic"].item() == pytest.approx(0.5 * float(sum(sums)) / (2 * 8), rel=1e-6)
    matched = [((q(tl) - q(torch.relu(sl))).abs() < 0.3).flatten(1).float().mean(1) for tl, sl in zip(t, s)]
    assert torch.equal(ratio, torch.cat(matched)) and ratio.shape == (8,)
    one = MimicFeatures(torch.cat([t[0], t[0]]), torch.cat([s[0], s[0]]))
    two = MimicFeatures((t[0], t[0]), (s[0], s[0]))  # same channels: the level split changes nothing
    assert loss(one)["loss_mimic"].item() == pytest.approx(loss(two)["loss_mimic"].item(), rel=1e-6)
