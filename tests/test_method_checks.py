"""End-to-end checks of the method on one Quantization Mimic training step (detectron2's own step, the
model's own ``loss_mimic``) on a real batch of the mini data set:

- the mimic term's gradient reaches the student's backbone (down to its first conv) and the adaptation
  conv r(); it is the difference between the step with and without the term; the teacher gets none;
- with lambda = 0 the QM student's step is the scratch student's step (same seed, same batch);
- the quantized teacher's RoI features lie on the code book and are not all zero, and both sides are
  pooled from the student's first NUM_ROIS_PER_IMAGE sampled proposals;
- the matching ratio the step logs is the hand-computed one.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from conftest import CONFIGS, STUDENT_CONFIG, registered_mini_shapes
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch import nn

from quant_mimic.config import build_config
from quant_mimic.engine import Trainer
from quant_mimic.modeling import MimicLoss, QuantMimicRCNN
from quant_mimic.modeling.mimic_loss import MimicFeatures
from quant_mimic.modeling.quantizer import Quantizer

QM_CONFIG = CONFIGS / "qm_R_tiny_FPN.yaml"
DATA = "mctest_shapes"
OPTS = ["DATASETS.TRAIN", f"('{DATA}_train',)", "DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.WARMUP_ITERS", "5", "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu"]  # fmt: skip
DETECTION_LOSSES = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}


@pytest.fixture(scope="module", autouse=True)
def test_datasets(tmp_path_factory):
    with registered_mini_shapes(tmp_path_factory.mktemp("data"), DATA):
        yield


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """An untrained quantized ResNet18-1-4 FPN teacher (config, weights): its quantized features are
    already rich (about half the RoI elements are non-zero codes), which is all these checks need."""
    folder = tmp_path_factory.mktemp("teacher")
    config = folder / "teacher.yaml"
    config.write_text(
        f'_BASE_: "{STUDENT_CONFIG}"\nMODEL:\n  RESNETS:\n    WIDTH_DIVISOR: 4\n'
        "  QUANTIZER:\n    ENABLED: True\n"
    )
    torch.manual_seed(0)
    weights = folder / "teacher.pth"
    torch.save(
        {"model": build_model(build_config(str(config), ["MODEL.DEVICE", "cpu"])).state_dict()}, weights
    )
    return config, weights


def training_images(n: int) -> list[dict]:
    """``n`` training images as detectron2's train loader gives them (random flip drawn once, here)."""
    cfg = build_config(str(STUDENT_CONFIG), OPTS)
    torch.manual_seed(0)
    mapper = DatasetMapper(cfg, is_train=True)
    return [mapper(dict(d)) for d in DatasetCatalog.get(f"{DATA}_train")[:n]]


@pytest.fixture(scope="module")
def batch():
    return training_images(2)


def qm_trainer(teacher, output_dir, *opts) -> Trainer:
    config, weights = teacher
    cfg = build_config(
        str(QM_CONFIG),
        [*OPTS, "MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(config), "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(weights),
         "MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES", "0", "OUTPUT_DIR", str(output_dir), *opts],
    )  # fmt: skip
    cfg.freeze()
    torch.manual_seed(0)
    return Trainer(cfg)


def one_step(trainer: Trainer, batch: list[dict], seed: int = 0) -> dict[str, float]:
    """detectron2's training step of ``trainer`` on ``batch`` (proposal sampling seeded); the losses it logs.
    The gradients of the step stay on the parameters (the step zeroes them before its backward)."""
    inner = trainer._trainer
    if "_data_loader_iter_obj" in vars(inner):  # upstream detectron2: the iterator is made lazily
        inner._data_loader_iter_obj = iter([batch])
    else:
        inner._data_loader_iter = iter([batch])
    torch.manual_seed(seed)
    with EventStorage(0) as storage:
        trainer.run_step()
    return {
        k: v.latest()
        for k, v in storage.histories().items()
        if k.startswith("loss_") or k.startswith("mimic/")
    }


def gradients(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for name, p in module.named_parameters()
        if p.requires_grad
    }


def test_mimic_gradient_reaches_the_students_backbone_and_the_adapter_and_not_the_teacher(
    teacher, batch, tmp_path
):
    trainer = qm_trainer(teacher, tmp_path)
    model, step = trainer.model, trainer._trainer.model
    assert step is model and model.mimic_loss.weight == 1.0
    start = copy.deepcopy(model.state_dict())

    losses = one_step(trainer, batch)
    assert losses["loss_mimic"] > 0
    with_mimic = gradients(model)
    teacher_params = dict(model.teacher.named_parameters())
    assert teacher_params and all(not p.requires_grad and p.grad is None for p in teacher_params.values())
    assert not any(name.startswith("teacher.") for name in with_mimic)
    for name, value in model.teacher.state_dict().items():  # the optimizer's step left it alone
        assert torch.equal(value, start[f"teacher.{name}"]), name
    # the step did update the student: its own step is not a no-op
    assert not torch.equal(model.state_dict()["adapter.weight"], start["adapter.weight"])

    model.load_state_dict(start)
    step.mimic_loss.weight = 0.0  # the same step without the mimic term
    one_step(trainer, batch)
    without = gradients(model)

    mimic_part = {name: with_mimic[name] - without[name] for name in with_mimic}
    # r() is trained by the mimic term alone
    for name in ("adapter.weight", "adapter.bias"):
        assert torch.count_nonzero(without[name]) == 0, name
        assert torch.count_nonzero(with_mimic[name]) > 0, name
    # the term reaches the student's first conv, i.e. through the whole backbone
    backbone = [n for n in mimic_part if n.startswith("student.backbone.")]
    first_conv = "student.backbone.bottom_up.stem.conv1.weight"
    assert first_conv in backbone and mimic_part[first_conv].abs().sum() > 0
    # every ResNet layer, the FPN's lateral convs and its p2 output conv (192 px images: ROIAlign's level
    # assignment puts the proposals on p2; the top-down path carries the gradient to every lateral)
    expected = [
        n for n in backbone if n.startswith(("student.backbone.bottom_up.", "student.backbone.fpn_lateral"))
    ]
    expected += ["student.backbone.fpn_output2.weight", "student.backbone.fpn_output2.bias"]
    assert len(expected) > 60
    assert [n for n in expected if mimic_part[n].abs().sum() == 0] == []
    # and the detection heads get no mimic gradient (the term is on the backbone's RoI features only)
    for name in mimic_part:
        if name.startswith(("student.roi_heads.", "student.proposal_generator.")):
            assert torch.allclose(mimic_part[name], torch.zeros_like(mimic_part[name]), atol=1e-6), name

    # the difference is exactly the gradient of the mimic term on its own
    model.load_state_dict(start)
    step.mimic_loss.weight = 1.0
    torch.manual_seed(0)
    with EventStorage(0):
        loss_mimic = step(batch)["loss_mimic"]
    names = ["adapter.weight", first_conv, *backbone[-3:]]
    params = dict(model.named_parameters())
    alone = torch.autograd.grad(loss_mimic, [params[n] for n in names])
    for name, g in zip(names, alone):
        assert torch.allclose(mimic_part[name], g, rtol=1e-3, atol=1e-7 + 1e-4 * g.abs().max()), name


def test_with_lambda_zero_a_qm_step_is_the_scratch_students_step(teacher, batch, tmp_path):
    qm = qm_trainer(teacher, tmp_path / "qm", "MODEL.QUANT_MIMIC.LOSS_WEIGHT", "0.0")
    cfg = build_config(str(STUDENT_CONFIG), [*OPTS, "OUTPUT_DIR", str(tmp_path / "scratch")])
    cfg.freeze()
    scratch = Trainer(cfg)
    assert type(scratch.model).__name__ == "GeneralizedRCNN"
    scratch.model.load_state_dict(qm.model.student.state_dict())  # the same initial student
    start = copy.deepcopy(scratch.model.state_dict())

    qm_losses, scratch_losses = one_step(qm, batch), one_step(scratch, batch)
    assert qm_losses.pop("loss_mimic") == 0.0 and "mimic/matching_ratio" in qm_losses
    qm_losses.pop("mimic/matching_ratio")
    assert set(scratch_losses) == DETECTION_LOSSES and qm_losses == scratch_losses

    after_qm, after_scratch = qm.model.student.state_dict(), scratch.model.state_dict()
    assert after_qm.keys() == after_scratch.keys()
    for name, value in after_scratch.items():
        assert torch.equal(after_qm[name], value), name
    assert any(not torch.equal(start[n], after_scratch[n]) for n in start)  # the step changed the student


def test_quantized_teacher_roi_features_lie_on_the_code_book_and_are_pooled_from_the_sampled_boxes(
    teacher, tmp_path
):
    batch = training_images(3)  # three: the second and the third image's RoIs have their own offsets
    trainer = qm_trainer(teacher, tmp_path, "MODEL.QUANT_MIMIC.NUM_ROIS_PER_IMAGE", "32")  # of 128 sampled
    model = trainer.model
    loss = model.mimic_loss
    stride = loss.quantizer.stride
    seen, mimic_pooler_calls = {}, []
    model.student.roi_heads.register_forward_hook(lambda m, i, out: seen.__setitem__("sampled", out[0]))
    model.pooler.register_forward_hook(lambda m, i, out: mimic_pooler_calls.append(len(out)))
    torch.manual_seed(0)
    with EventStorage(0):
        _, features = model.losses_and_mimic_features(batch)
    # the student's RoIs come from its box head's pooling of the sampled proposals (not pooled twice):
    # the mimic pooler runs once, on the teacher's maps
    assert mimic_pooler_calls == [3 * 32]

    # the teacher's own map: its quantized ReLU's output, codes {0, s, 2s, ...}, many of them non-zero
    for name, fmap in model.teacher.features(batch).items():
        assert torch.equal(fmap / stride, (fmap / stride).round()) and fmap.min() >= 0, name
        assert (fmap > 0).float().mean() > 0.1 and fmap.unique().numel() > 3, name
    # what the loss compares: Q of the pooled RoI features on both sides, on the code book, not all zero
    t, s = loss.compared(features)
    assert (loss.quantize_teacher, loss.quantize_student) == (True, True)
    assert t.shape == s.shape == (3 * 32, 64, 7, 7)
    for codes in (t, s.detach()):
        assert torch.equal(codes / stride, (codes / stride).round()) and codes.min() >= 0
    assert (t > 0).float().mean() > 0.1 and t.unique().numel() > 3
    assert s.requires_grad and not t.requires_grad

    # both sides pooled from the first NUM_ROIS_PER_IMAGE proposals the student's ROI heads sampled
    boxes = [p.proposal_boxes[: model.num_rois_per_image] for p in seen["sampled"]]
    assert [len(b) for b in boxes] == [32] * 3 and [len(p) for p in seen["sampled"]] == [128] * 3
    teacher_maps = model.teacher.features(batch)
    with torch.no_grad():
        student_maps = model.student.backbone(model.student.preprocess_image(batch).tensor)
        expected_t = model.pooler([teacher_maps[f] for f in model.in_features], boxes)
        expected_s = model.adapter(model.pooler([student_maps[f] for f in model.in_features], boxes))
    assert torch.equal(features.teacher, expected_t)
    assert torch.allclose(features.student, expected_s, atol=1e-6)


# --- the matching ratio against a hand computation (paper Fig. 5: share of elements with |t - s| < 0.3) ---

# N = 2 RoIs, C = 1, 2x2. Q(relu(.)) with stride 1:
#   Q(T) = [[0, 2], [2, 0]], [[3, 0], [1, 0]]     Q(S) = [[0, 2], [3, 0]], [[2, 1], [0, 0]]
#   |Q(T) - Q(S)| = [0, 0, 1, 0] -> 3 of 4 below 0.3;   [1, 1, 1, 0] -> 1 of 4
TEACHER = torch.tensor([[[[0.2, 1.6], [2.4, -1.0]]], [[[3.0, 0.0], [0.7, 0.4]]]])
STUDENT = torch.tensor([[[[-0.6, 2.4], [2.6, 0.4]]], [[[2.2, 0.5001], [-0.3, 0.1]]]])
RATIO = [0.75, 0.25]
LOSS_AS_WRITTEN = (1 + 1 + 1 + 1) / (2 * 2)  # sum of squared code differences / (2N)


def qm_loss(**overrides) -> MimicLoss:
    kwargs = dict(weight=1.0, normalize="as_written", quantizer=Quantizer(1.0), quantize_teacher=True,
                  quantize_student=True, feature_relu=True, match_threshold=0.3)  # fmt: skip
    return MimicLoss(**{**kwargs, **overrides})


class HandsOver(QuantMimicRCNN):
    """QuantMimicRCNN's own forward over a known pair: its student's detection losses are
    ``{"loss_cls": 0.5}`` and its mimic RoI features ``MimicFeatures(TEACHER, STUDENT)``."""

    def __init__(self, mimic_loss: MimicLoss):
        nn.Module.__init__(self)
        self.mimic_loss = mimic_loss
        self.student = lambda batched_inputs: [{"instances": None}]  # inference

    def losses_and_mimic_features(self, batched_inputs):
        return {"loss_cls": torch.tensor(0.5)}, MimicFeatures(TEACHER, STUDENT.clone())


def test_matching_ratio_of_the_quantized_pair_equals_the_hand_computation():
    loss = qm_loss()
    assert loss.matching_ratio(MimicFeatures(TEACHER, STUDENT)).tolist() == RATIO
    losses, ratio = loss.loss_and_matching_ratio(MimicFeatures(TEACHER, STUDENT))
    assert ratio.tolist() == RATIO and losses["loss_mimic"].item() == pytest.approx(LOSS_AS_WRITTEN)


def test_the_model_adds_lambda_times_the_loss_and_logs_the_mean_matching_ratio():
    step = HandsOver(qm_loss(weight=0.5)).train()
    with EventStorage(0) as storage:
        out = step([])
    assert set(out) == {"loss_cls", "loss_mimic"}  # losses only: the features stay inside the model
    assert out["loss_mimic"].item() == pytest.approx(0.5 * LOSS_AS_WRITTEN)
    assert storage.histories()["mimic/matching_ratio"].latest() == pytest.approx(sum(RATIO) / 2)
    assert set(storage.histories()) == {"mimic/matching_ratio"}
    assert step.eval()([]) == [{"instances": None}]  # inference: the model's outputs, nothing logged


def test_matching_threshold_is_strict_and_compares_after_quantization():
    t = torch.tensor([1.5, 1.25, 3.0, 0.0]).view(1, 1, 2, 2)
    s = torch.tensor([1.0, 1.0, 3.5, 0.0]).view(1, 1, 2, 2)  # |t - s| = 0.5, 0.25, 0.5, 0
    plain = qm_loss(quantize_teacher=False, quantize_student=False, feature_relu=False, match_threshold=0.5)
    assert plain.matching_ratio(MimicFeatures(t, s)).tolist() == [0.5]  # 0.5 is not below 0.5
    # quantized (half-way goes down): Q(t) = 1, 1, 3, 0 and Q(s) = 1, 1, 3, 0 -> all match
    assert qm_loss(match_threshold=0.5).matching_ratio(MimicFeatures(t, s)).tolist() == [1.0]


# --- where the mimicked RoIs are read, and what the model is outside training ---


def coordinate_maps(strides: list[int], size: int) -> list[torch.Tensor]:
    """One map per stride whose two channels hold, at each cell, the input-image x and y of its centre."""
    maps = []
    for stride in strides:
        centres = (torch.arange(size // stride, dtype=torch.float32) + 0.5) * stride
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        maps.append(torch.stack([x, y])[None])
    return maps


@pytest.mark.parametrize(
    "config, strides", [(QM_CONFIG, [4, 8, 16, 32]), (CONFIGS / "shapes" / "qm_VGG32_RFCN.yaml", [16])]
)
def test_mimic_pooler_reads_each_box_at_its_place_on_every_level(config, strides):
    from detectron2.structures import Boxes

    from quant_mimic.modeling.meta_arch import mimic_pooler

    cfg = build_config(str(config))
    pooler = mimic_pooler(cfg, strides)
    r = pooler.output_size[0]
    # boxes of 60 to 460 px in a 512 px image: ROIAlign's level assignment spreads them over p2 .. p5
    boxes = torch.tensor([[40.0, 50.0, 100.0, 110.0], [100.0, 60.0, 250.0, 210.0], [90.0, 80.0, 390.0, 380.0],
                          [30.0, 20.0, 490.0, 480.0]])  # fmt: skip
    pooled = pooler(coordinate_maps(strides, 512), [Boxes(boxes)])
    assert pooled.shape == (4, 2, r, r)
    # a linear map is read back exactly: every bin holds the image coordinates of its centre
    steps = (torch.arange(r, dtype=torch.float32) + 0.5) / r
    x = boxes[:, 0:1] + steps * (boxes[:, 2:3] - boxes[:, 0:1])
    y = boxes[:, 1:2] + steps * (boxes[:, 3:4] - boxes[:, 1:2])
    assert torch.allclose(pooled[:, 0], x[:, None, :].expand(-1, r, -1), atol=1e-3)
    assert torch.allclose(pooled[:, 1], y[:, :, None].expand(-1, -1, r), atol=1e-3)


def test_the_teacher_stays_in_eval_mode_and_inference_is_the_student_alone(teacher, batch, tmp_path):
    model = qm_trainer(teacher, tmp_path).model
    model.train()
    assert model.student.training and model.adapter.training
    assert not any(m.training for m in model.teacher.modules())  # BatchNorm statistics never move
    model.eval()
    with torch.no_grad():
        ours, students = model(batch), model.student(batch)
    assert len(ours) == len(students) == 2
    for a, b in zip(ours, students):
        assert torch.equal(a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor)
        assert torch.equal(a["instances"].scores, b["instances"].scores)


def test_the_student_box_heads_pooling_is_reused_only_where_it_pools_as_the_mimic_pooler_does(
    teacher, tmp_path
):
    from detectron2.modeling.poolers import ROIPooler

    model = qm_trainer(teacher, tmp_path).model
    box_pooler = model.student.roi_heads.box_pooler
    assert model.reusable_box_pooler() is box_pooler  # StandardROIHeads: same maps, size, ROIAlignV2
    mimic = model.pooler
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    for kwargs in [
        dict(output_size=5),
        dict(pooler_type="ROIAlign"),  # aligned=False: the same layer class as ROIAlignV2
        dict(sampling_ratio=2),
        dict(scales=[1 / 8, 1 / 16, 1 / 32, 1 / 64]),
        dict(canonical_box_size=112),
        dict(canonical_level=3),
    ]:
        args = dict(output_size=7, scales=scales, sampling_ratio=0, pooler_type="ROIAlignV2")
        model.pooler = ROIPooler(**{**args, **kwargs})
        assert model.reusable_box_pooler() is None, kwargs
    # another kind of layer with the same settings (torchvision's RoIAlign beside detectron2's ROIAlign)
    model.pooler = ROIPooler(output_size=7, scales=scales, sampling_ratio=0, pooler_type="ROIAlignV2")
    model.pooler.level_poolers = nn.ModuleList(
        [torchvision.ops.RoIAlign((7, 7), scale, 0, aligned=True) for scale in scales]
    )
    assert model.reusable_box_pooler() is None
    model.pooler = ROIPooler(output_size=7, scales=scales[:3], sampling_ratio=0, pooler_type="ROIAlignV2")
    model.in_features = model.in_features[:3]
    assert model.reusable_box_pooler() is None  # other feature maps
    model.pooler, model.in_features = mimic, list(model.student.roi_heads.in_features)
    assert model.reusable_box_pooler() is box_pooler

    # RoIPool layers (no ``aligned``) on both sides compare equal too
    model.student.roi_heads.box_pooler = ROIPooler(
        output_size=7, scales=scales, sampling_ratio=0, pooler_type="ROIPool"
    )
    model.pooler = ROIPooler(output_size=7, scales=scales, sampling_ratio=0, pooler_type="ROIPool")
    assert model.reusable_box_pooler() is model.student.roi_heads.box_pooler
    del model.student.roi_heads.box_pooler  # a head without a box pooler (R-FCN)
    assert model.reusable_box_pooler() is None
