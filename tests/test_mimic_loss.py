"""The mimic loss against a hand computation, its modes, the matching ratio, and its quantizer (the
teacher's unless set explicitly)."""

import pytest
import torch
from conftest import CONFIGS

from quant_mimic.config import build_config, load_teacher_config, mimic_quantizer
from quant_mimic.errors import QuantMimicInputError
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


@pytest.mark.parametrize("normalize, denominator", [("as_written", 2 * 1), ("per_element", 2 * 1 * 4)])
def test_a_single_roi_is_normalised_by_itself(normalize, denominator):
    # N = 1 (the first RoI): squared code differences 1 + 1 + 1 + 0 = 3
    out = make_loss(normalize=normalize)(MimicFeatures(TEACHER[:1], STUDENT[:1]))
    assert out["loss_mimic"].item() == pytest.approx(3 / denominator)


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


def test_half_precision_features_give_the_float32_loss():
    # AMP hands the loss half-precision features: 1024 RoIs x 16 x 7 x 7 squared differences of about 9
    # sum to 7e6, past float16's largest number (65504); the sum must still be taken in float32.
    torch.manual_seed(0)
    teacher, student = torch.rand(1024, 16, 7, 7) * 4, torch.rand(1024, 16, 7, 7) * 4 - 2
    loss = make_loss(normalize="per_element", quantize_teacher=False, quantize_student=False)
    full = loss(MimicFeatures(teacher, student))["loss_mimic"]
    half = loss(MimicFeatures(teacher.half(), student.half()))["loss_mimic"]
    assert half.dtype == torch.float32 and torch.isfinite(half)
    assert half.item() == pytest.approx(full.item(), rel=1e-3)


def test_empty_batch_gives_zero_loss():
    empty = torch.zeros(0, 1, 2, 2)
    assert make_loss(normalize="per_element")(MimicFeatures(empty, empty))["loss_mimic"].item() == 0.0


def test_unknown_normalisation_is_refused():
    with pytest.raises(ValueError, match="Unknown mimic loss normalisation"):
        make_loss(normalize="mean")


# --- the loss's quantizer: MODEL.QUANT_MIMIC.QUANTIZER_TYPE / _STRIDE, else the teacher's MODEL.QUANTIZER ---

QM_CONFIG = CONFIGS / "qm_R_tiny_FPN.yaml"


def qm_cfg_with_teacher(tmp_path, *opts, enabled=True, kind="pow2", stride=0.5):
    """The main QM config with a teacher whose in-model quantizer is (``kind``, ``stride``)."""
    teacher = tmp_path / "teacher.yaml"
    teacher.write_text(
        f'_BASE_: "{CONFIGS / "shapes" / "teacher_R18_2_FPN_quant.yaml"}"\nMODEL:\n  QUANTIZER:\n'
        f'    ENABLED: {enabled}\n    TYPE: "{kind}"\n    STRIDE: {stride}\n'
    )
    return build_config(str(QM_CONFIG), ["MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(teacher), *opts])


def loss_quantizer(cfg) -> tuple[str, float]:
    quantizer = MimicLoss(cfg).quantizer
    return quantizer.kind, quantizer.stride


def test_unset_loss_quantizer_follows_the_quantized_teacher(tmp_path):
    cfg = qm_cfg_with_teacher(tmp_path)
    assert (cfg.MODEL.QUANT_MIMIC.QUANTIZER_TYPE, cfg.MODEL.QUANT_MIMIC.QUANTIZER_STRIDE) == ("", 0.0)
    assert loss_quantizer(cfg) == ("pow2", 0.5)
    assert mimic_quantizer(cfg, load_teacher_config(cfg)) == ("pow2", 0.5)  # a loaded teacher config


def test_loss_quantizer_follows_the_teacher_config_it_is_given(tmp_path):
    teacher_cfg = load_teacher_config(qm_cfg_with_teacher(tmp_path))  # pow2, stride 0.5
    cfg = build_config(str(QM_CONFIG), ["MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(tmp_path / "elsewhere.yaml")])
    quantizer = MimicLoss(cfg, teacher_cfg).quantizer  # the given config: the file named is not read
    assert (quantizer.kind, quantizer.stride) == ("pow2", 0.5)


@pytest.mark.parametrize(
    "opts, expected",
    [
        (["MODEL.QUANT_MIMIC.QUANTIZER_TYPE", "uniform"], ("uniform", 0.5)),
        (["MODEL.QUANT_MIMIC.QUANTIZER_STRIDE", "2.0"], ("pow2", 2.0)),
        (["MODEL.QUANT_MIMIC.QUANTIZER_TYPE", "uniform", "MODEL.QUANT_MIMIC.QUANTIZER_STRIDE", "2.0"],
         ("uniform", 2.0)),
    ],
)  # fmt: skip
def test_explicit_loss_quantizer_wins_over_the_teachers(tmp_path, opts, expected):
    assert loss_quantizer(qm_cfg_with_teacher(tmp_path, *opts)) == expected


def test_explicit_loss_quantizer_does_not_read_the_teacher_config(tmp_path):
    cfg = build_config(str(QM_CONFIG), ["MODEL.QUANT_MIMIC.QUANTIZER_TYPE", "pow2",
                                        "MODEL.QUANT_MIMIC.QUANTIZER_STRIDE", "2.0",
                                        "MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(tmp_path / "none.yaml")])  # fmt: skip
    assert mimic_quantizer(cfg) == ("pow2", 2.0)
    cfg.MODEL.QUANT_MIMIC.QUANTIZER_STRIDE = 0.0  # unset: the teacher config is needed, and missing
    with pytest.raises(QuantMimicInputError, match="TEACHER_CONFIG .* is not a config file"):
        mimic_quantizer(cfg)


def test_full_precision_teacher_gives_the_papers_quantizer(tmp_path):
    # plain mimic: the teacher has no quantizer, so an unset loss quantizer is uniform with stride 1
    assert loss_quantizer(qm_cfg_with_teacher(tmp_path, enabled=False)) == ("uniform", 1.0)


def test_negative_loss_stride_is_refused(tmp_path):
    cfg = qm_cfg_with_teacher(tmp_path, "MODEL.QUANT_MIMIC.QUANTIZER_STRIDE", "-1.0")
    with pytest.raises(QuantMimicInputError, match="QUANTIZER_STRIDE is -1.0: use a positive stride"):
        MimicLoss(cfg)


@pytest.mark.parametrize(
    "config, expected",
    [
        ("qm_R_tiny_FPN.yaml", ("uniform", 1.0)),
        ("shapes/qm_VGG32_RFCN.yaml", ("uniform", 1.0)),
        ("shapes/mimic_R18_16_FPN.yaml", ("uniform", 1.0)),
        ("shapes/qm_pow2_R18_16_FPN.yaml", ("pow2", 1.0)),  # differs from its teacher on purpose
        ("wider_face/qm_VGG32_RFCN.yaml", ("uniform", 1.0)),
        ("wider_face/qm_pow2_VGG32_RFCN.yaml", ("pow2", 1.0)),
        ("voc/qm_R18_16_FPN.yaml", ("uniform", 1.0)),
    ],
)
def test_shipped_configs_loss_quantizer(config, expected):
    assert loss_quantizer(build_config(str(CONFIGS / config))) == expected
