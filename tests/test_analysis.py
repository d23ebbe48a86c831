"""model_cost: parameter and FLOP counts, and a latency breakdown whose parts add up to the total."""

from __future__ import annotations

import pytest
import torch
from conftest import CONFIGS, STUDENT_CONFIG
from detectron2.modeling import StandardROIHeads, build_model

from quant_mimic.analysis import model_cost, staged_inference
from quant_mimic.config import build_config
from quant_mimic.timing import PARTS, random_image

CPU = ["MODEL.DEVICE", "cpu"]
SIZE = 192


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the test machine's two cores are shared, and waiting threads skew timings."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    cfg = build_config(str(STUDENT_CONFIG), CPU)
    model = build_model(cfg).eval()
    return cfg, model, model_cost(cfg, SIZE, SIZE, repeats=5, warmup=1, model=model)


def test_parameter_counts(student):
    _, model, cost = student
    assert cost["params"] == sum(p.numel() for p in model.parameters())
    assert cost["backbone_params"] == sum(p.numel() for p in model.backbone.parameters())
    assert 0 < cost["backbone_params"] < cost["params"]


def test_teacher_costs_more_gflops_than_student(student):
    _, _, cost = student
    assert 0 < cost["backbone_gflops"] < cost["gflops"]
    teacher = model_cost(
        build_config(str(CONFIGS / "shapes" / "teacher_R18_FPN.yaml"), CPU), SIZE, SIZE, 1, 0
    )
    assert teacher["gflops"] > 10 * cost["gflops"]
    assert teacher["params"] > 10 * cost["params"]


def test_latency_parts_are_positive_and_add_up_to_the_total(student):
    _, _, cost = student
    latency = cost["latency_ms"]
    assert all(latency[p] > 0 for p in PARTS), latency
    assert sum(latency[p] for p in PARTS) == pytest.approx(latency["total"], rel=0.15)
    assert not cost["roi_heads_includes_postprocess"]
    assert cost["proposals"] > 0 and cost["input_size"] == [SIZE, SIZE] and cost["repeats"] == 5


def test_staged_inference_is_the_models_inference(student):
    """The timed stages compute exactly what GeneralizedRCNN.inference does."""
    _, model, _ = student
    inputs = [{"image": random_image(SIZE, SIZE), "height": SIZE, "width": SIZE}]
    with torch.no_grad():
        expected = model.inference(inputs)[0]["instances"]
        laps = []
        staged, counts = staged_inference(model, inputs, laps.append)
    staged = staged[0]["instances"]
    assert len(expected) > 0 and counts["detections"] == len(expected)
    assert torch.equal(staged.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(staged.scores, expected.scores)
    assert torch.equal(staged.pred_classes, expected.pred_classes)
    assert set(laps) == set(PARTS)


class _OtherROIHeads(StandardROIHeads):
    """Stands for a head with its own box branch (e.g. R-FCN): it cannot be timed stage by stage."""

    def _forward_box(self, features, proposals):
        return super()._forward_box(features, proposals)


def test_other_roi_heads_are_timed_as_one_part_with_their_postprocessing(student):
    cfg, _, _ = student
    model = build_model(cfg).eval()
    model.roi_heads.__class__ = _OtherROIHeads
    cost = model_cost(cfg, SIZE, SIZE, repeats=3, warmup=1, model=model, flops=False)
    assert cost["roi_heads_includes_postprocess"]
    assert cost["gflops"] is None
    latency = cost["latency_ms"]
    assert latency["roi_heads"] > 0 and latency["postprocess"] > 0  # detector_postprocess alone
    assert sum(latency[p] for p in PARTS) == pytest.approx(latency["total"], rel=0.15)


def test_a_quant_mimic_config_is_measured_as_its_student(student):
    _, _, cost = student
    qm = model_cost(build_config(str(CONFIGS / "qm_R_tiny_FPN.yaml"), CPU), SIZE, SIZE, 1, 0, flops=False)
    assert qm["params"] == cost["params"]
