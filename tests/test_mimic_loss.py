"""The mimic loss against a hand computation, its modes, and the matching ratio."""

import pytest
import torch

from quant_mimic.modeling.mimic_loss import MimicFeatures, MimicLoss
from quant_mimic.modeling.quantizer import Quantizer


def make_loss(**overrides) -> MimicLoss:
    kwargs = dict(
        weight=1.0,
        normalize="as_written",
        quantizer=Quantizer(1.0),
        quantize_teacher=True,
        quantize_student=True,
        feature_relu=True,
        match_threshold=0.3,
    )
    kwargs.update(overrides)
    return MimicLoss(**kwargs)


TEACHER = torch.tensor([[[[0.2, 1.6], [2.4, -1.0]]], [[[3.0, 0.0], [0.7, 0.4]]]])  # N=2, C=1, 2x2
STUDENT = torch.tensor([[[[0.6, 1.4], [2.6, 0.4]]], [[[2.2, 0.5], [-0.3, 1.2]]]])


def test_quantized_loss_equals_hand_computation():
    # Q(teacher) = [[0,2],[2,0]], [[3,0],[1,0]];  Q(student) = [[1,1],[3,0]], [[2,0],[0,1]]
    # squared differences: 1+1+1+0 + 1+0+1+1 = 6;  as written: 6 / (2N) = 1.5
    out = make_loss()(MimicFeatures(TEACHER, STUDENT))
    assert out["loss_mimic"].item() == pytest.approx(1.5)


def test_per_element_normalisation_divides_by_c_h_w():
    out = make_loss(normalize="per_element", weight=2.0)(MimicFeatures(TEACHER, STUDENT))
    assert out["loss_mimic"].item() == pytest.approx(2.0 * 6 / (2 * 2 * 4))


def test_plain_mimic_has_no_quantization():
    loss = make_loss(quantize_teacher=False, quantize_student=False, feature_relu=False)
    expected = (TEACHER - STUDENT).pow(2).sum().item() / 4
    assert loss(MimicFeatures(TEACHER, STUDENT))["loss_mimic"].item() == pytest.approx(expected)


@pytest.mark.parametrize("q_teacher, q_student", [(True, False), (False, True), (True, True), (False, False)])
def test_each_mode_quantizes_exactly_its_sides(q_teacher, q_student):
    loss = make_loss(quantize_teacher=q_teacher, quantize_student=q_student)
    t, s = loss.compared(MimicFeatures(TEACHER, STUDENT))
    relu_t, relu_s = TEACHER.clamp(min=0), STUDENT.clamp(min=0)
    assert torch.equal(t, Quantizer(1.0)(relu_t) if q_teacher else relu_t)
    assert torch.equal(s, Quantizer(1.0)(relu_s) if q_student else relu_s)


def test_gradient_reaches_the_student_only_straight_through():
    student = STUDENT.clone().requires_grad_(True)
    teacher = TEACHER.clone().requires_grad_(True)
    make_loss()(MimicFeatures(teacher, student))["loss_mimic"].backward()
    assert teacher.grad is None
    # d/ds of sum(Q(t) - Q(relu(s)))^2 / (2N) with straight-through Q: (Q(s) - Q(t)) / N where s > 0
    q = Quantizer(1.0)
    expected = (q(STUDENT.clamp(min=0)) - q(TEACHER.clamp(min=0))) / 2 * (STUDENT > 0)
    assert torch.allclose(student.grad, expected)


def test_matching_ratio_counts_close_elements_per_roi():
    loss = make_loss(quantize_teacher=False, quantize_student=False, feature_relu=False)
    ratio = loss.matching_ratio(MimicFeatures(TEACHER, STUDENT))
    # |t - s| per RoI: [0.4, 0.2, 0.2, 1.4] -> 2 of 4 below 0.3;  [0.8, 0.5, 1.0, 0.8] -> 0 of 4
    assert ratio.tolist() == pytest.approx([0.5, 0.0])


def test_empty_batch_gives_zero_loss():
    empty = torch.zeros(0, 1, 2, 2)
    assert make_loss(normalize="per_element")(MimicFeatures(empty, empty))["loss_mimic"].item() == 0.0


def test_unknown_normalisation_is_refused():
    with pytest.raises(ValueError, match="Unknown mimic loss normalisation"):
        make_loss(normalize="mean")
