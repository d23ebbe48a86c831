"""R-FCN head (quant_mimic.modeling.rfcn), its training through train_net.py, and QM with an R-FCN student."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, MINI_OPTS, read_metrics, registered_mini_shapes, run_train_net
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from quant_mimic.config import build_config
from quant_mimic.engine import Trainer
from quant_mimic.modeling import PSRoIPredictor, QuantMimicRCNN, RFCNROIHeads

STUDENT = CONFIGS / "shapes" / "student_VGG32_RFCN_scratch.yaml"
TEACHER = CONFIGS / "shapes" / "teacher_VGG4_RFCN.yaml"
QM = CONFIGS / "shapes" / "qm_VGG32_RFCN.yaml"
NUM_CLASSES = 5
K = 3  # MODEL.RFCN.POOL_SIZE of the shapes configs
FEATURE = ShapeSpec(channels=16, stride=16)
IMAGE = 192
TEST_DATA = ["DATASETS.TRAIN", "('rfcntest_shapes_train',)", "DATASETS.TEST", "()"]


@pytest.fixture(scope="module", autouse=True)
def test_datasets(tmp_path_factory):
    with registered_mini_shapes(tmp_path_factory.mktemp("data"), "rfcntest_shapes"):
        yield


def student_cfg(*opts):
    cfg = build_config(str(STUDENT), list(opts))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def heads(*opts) -> RFCNROIHeads:
    torch.manual_seed(0)
    return RFCNROIHeads(student_cfg(*opts), {"vgg5": FEATURE})


def proposals_and_targets(num_images=2, num_proposals=200):
    g = torch.Generator().manual_seed(0)
    proposals, targets = [], []
    for _ in range(num_images):
        xy = torch.rand(num_proposals, 2, generator=g) * 150
        wh = 8 + torch.rand(num_proposals, 2, generator=g) * 80
        p = Instances((IMAGE, IMAGE))
        p.proposal_boxes = Boxes(torch.cat([xy, (xy + wh).clamp(max=IMAGE - 1)], dim=1))
        p.objectness_logits = torch.zeros(num_proposals)
        t = Instances((IMAGE, IMAGE))
        t.gt_boxes = Boxes(torch.tensor([[20.0, 30.0, 80.0, 90.0], [100.0, 60.0, 170.0, 150.0]]))
        t.gt_classes = torch.tensor([1, 4])
        proposals.append(p)
        targets.append(t)
    return proposals, targets


def features(num_images=2):
    return {
        "vgg5": torch.randn(
            num_images, FEATURE.channels, IMAGE // 16, IMAGE // 16, generator=torch.Generator().manual_seed(1)
        )
    }


@pytest.mark.parametrize("agnostic, box_channels", [(True, 4), (False, 4 * NUM_CLASSES)])
def test_position_sensitive_score_maps_and_voting_shapes(agnostic, box_channels):
    predictor = heads("MODEL.RFCN.CLS_AGNOSTIC_BBOX_REG", str(agnostic)).predictor
    assert isinstance(predictor, PSRoIPredictor)
    x = features()["vgg5"]
    cls_maps, box_maps = predictor.score_maps(x)
    assert cls_maps.shape == (2, K * K * (NUM_CLASSES + 1), 12, 12)
    assert box_maps.shape == (2, K * K * box_channels, 12, 12)
    boxes = [p.proposal_boxes for p in proposals_and_targets(num_proposals=7)[0]]
    assert predictor.pool(cls_maps, boxes).shape == (14, NUM_CLASSES + 1, K, K)
    scores, deltas = predictor(x, boxes)
    assert scores.shape == (14, NUM_CLASSES + 1) and deltas.shape == (14, box_channels)
    assert torch.allclose(scores, predictor.pool(cls_maps, boxes).mean(dim=(2, 3)))  # average voting


def test_each_bin_reads_its_own_group_of_maps():
    predictor = heads().predictor
    groups = NUM_CLASSES + 1
    maps = torch.arange(K * K * groups, dtype=torch.float32).view(1, -1, 1, 1).expand(1, -1, 12, 12)
    pooled = predictor.pool(maps.contiguous(), [Boxes(torch.tensor([[16.0, 16.0, 150.0, 150.0]]))])
    expected = torch.arange(K * K * groups, dtype=torch.float32).view(1, groups, K, K)
    assert torch.equal(pooled, expected)  # class c, bin (i, j) <- channel c*k*k + i*k + j


def test_losses_are_finite_and_reach_the_score_convs():
    head = heads("MODEL.RFCN.OHEM", "False").train()
    proposals, targets = proposals_and_targets()
    with EventStorage():
        sampled, losses = head(None, features(), proposals, targets)
    assert set(losses) == {"loss_cls", "loss_box_reg"} and all(torch.isfinite(v) for v in losses.values())
    assert [len(p) for p in sampled] == [202, 202]  # BATCH_SIZE_PER_IMAGE 512 > 200 proposals + 2 gt
    assert all(p.has("gt_classes") for p in sampled)
    sum(losses.values()).backward()
    assert head.predictor.cls_score.weight.grad.abs().sum() > 0
    assert head.predictor.bbox_pred.weight.grad.abs().sum() > 0


def test_inference_returns_instances_with_boxes_scores_classes():
    head = heads().eval()
    proposals, _ = proposals_and_targets()
    with torch.no_grad():
        instances, losses = head(None, features(), proposals)
    assert losses == {} and len(instances) == 2
    for inst in instances:
        assert 0 < len(inst) <= 100
        assert inst.pred_boxes.tensor.shape == (len(inst), 4)
        assert inst.scores.shape == inst.pred_classes.shape == (len(inst),)
        assert inst.pred_classes.max() < NUM_CLASSES and inst.scores.min() >= 0.05  # SCORE_THRESH_TEST


def test_ohem_keeps_exactly_the_configured_number_with_the_highest_losses():
    b = 16
    head = heads("MODEL.RFCN.OHEM", "True", "MODEL.RFCN.OHEM_BATCH_SIZE_PER_IMAGE", str(b)).train()
    proposals, targets = proposals_and_targets()
    with EventStorage():
        sampled = head.label_and_sample_proposals(proposals, targets)
    predictions = head.predictor(features()["vgg5"], [p.proposal_boxes for p in sampled])
    per_roi = head.predictor.per_roi_losses(predictions, sampled).split([len(p) for p in sampled])
    keep = head.hard_example_indices(predictions, sampled)
    for loss, k in zip(per_roi, keep):
        assert len(k) == b and len(loss) > b
        dropped = torch.ones(len(loss), dtype=torch.bool)
        dropped[k] = False
        assert loss[k].min() >= loss[dropped].max()
    with EventStorage():
        kept, losses = head(None, features(), proposals, targets)
    assert [len(p) for p in kept] == [b, b] and torch.isfinite(losses["loss_cls"])


def test_head_refuses_several_feature_maps():
    cfg = student_cfg("MODEL.ROI_HEADS.IN_FEATURES", "['vgg4', 'vgg5']")
    with pytest.raises(ValueError, match="exactly one"):
        RFCNROIHeads(cfg, {"vgg4": FEATURE, "vgg5": FEATURE})


@pytest.mark.slow  # 40 iterations in a train_net.py process
def test_train_net_trains_an_rfcn_vgg_student_and_its_loss_goes_down(datasets_root, tmp_path):
    opts = [*MINI_OPTS, "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "40", "DATASETS.TEST", "()",
            "OUTPUT_DIR", str(tmp_path)]  # fmt: skip
    run = run_train_net(["--config-file", str(STUDENT), *opts], datasets_root)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [r for r in read_metrics(tmp_path) if "total_loss" in r]
    assert [r["iteration"] for r in rows] == [19, 39]  # each row: medians over its 20 iterations
    assert rows[-1]["total_loss"] < rows[0]["total_loss"]
    assert rows[-1]["loss_cls"] < rows[0]["loss_cls"]


def write_teacher(folder: Path, rfcn: bool) -> Path:
    """A VGG-1-8 quantized teacher config: R-FCN, or Faster R-CNN (StandardROIHeads, 7x7 conv-fc head)."""
    config = folder / f"teacher_{'rfcn' if rfcn else 'frcnn'}.yaml"
    head = (
        ""
        if rfcn
        else (
            '  ROI_HEADS:\n    NAME: "StandardROIHeads"\n'
            '  ROI_BOX_HEAD:\n    NAME: "FastRCNNConvFCHead"\n    NUM_FC: 2\n    FC_DIM: 64\n    POOLER_RESOLUTION: 7\n'
        )
    )
    config.write_text(
        f'_BASE_: "{TEACHER}"\nMODEL:\n  VGG:\n    WIDTH_DIVISOR: 8\n  QUANTIZER:\n    ENABLED: True\n{head}'
        f'OUTPUT_DIR: "{folder / "out"}"\n'
    )
    return config


@pytest.mark.parametrize("rfcn_teacher", [True, False])
def test_qm_pools_the_mimic_regions_at_the_rfcn_roi_size(tmp_path, rfcn_teacher):
    teacher = write_teacher(tmp_path, rfcn_teacher)
    cfg = build_config(str(QM), [*TEST_DATA, "MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(teacher)])
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model, QuantMimicRCNN) and model.pooler.output_size == (K, K)
    mapper = DatasetMapper(cfg, is_train=True)
    inputs = [mapper(dict(d)) for d in DatasetCatalog.get("rfcntest_shapes_train")[:2]]
    with EventStorage():
        out, mimic = model.losses_and_mimic_features(inputs)
    n = 2 * cfg.MODEL.QUANT_MIMIC.NUM_ROIS_PER_IMAGE  # OHEM keeps 128 per image
    assert mimic.teacher.shape == mimic.student.shape == (n, 512 // 8, K, K)
    teacher_map = model.teacher.features(inputs)["vgg5"]
    # the teacher's quantized ReLU on conv5_3: non-negative integer codes (stride 1), and not all zero
    assert torch.equal(teacher_map, teacher_map.round()) and teacher_map.min() >= 0
    assert teacher_map.unique().numel() > 1  # an untrained VGG-1-8: a few hundred non-zero codes
    assert all(torch.isfinite(v) for v in out.values())
    if not rfcn_teacher:  # detectron2's RPN + StandardROIHeads on the VGG map train too
        teacher_model = model.teacher.model.train()
        with EventStorage():
            assert "loss_box_reg" in teacher_model(inputs)


@pytest.mark.slow  # trains a teacher, then the student in a train_net.py process
def test_qm_with_rfcn_student_and_teacher_trains_and_logs_the_mimic_loss(datasets_root, tmp_path):
    teacher = write_teacher(tmp_path, rfcn=True)
    teacher_cfg = build_config(str(teacher), [*TEST_DATA, "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2",
                                              "SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS", "0"])  # fmt: skip
    trainer = Trainer(teacher_cfg)  # a few iterations: the mimic loss needs a checkpoint, not a good teacher
    trainer.resume_or_load(resume=False)
    trainer.train()
    weights = Path(teacher_cfg.OUTPUT_DIR) / "model_final.pth"
    assert weights.is_file()
    out = tmp_path / "qm"
    opts = [*MINI_OPTS, "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()",
            "MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(teacher), "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(weights),
            "MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES", "0", "OUTPUT_DIR", str(out)]  # fmt: skip
    run = run_train_net(["--config-file", str(QM), *opts], datasets_root)
    assert run.returncode == 0, run.stderr[-3000:]
    last = read_metrics(out)[-1]
    # the term is on and compares features that differ: a zero or disconnected quantizer (both sides all
    # zero) gives loss 0 and ratio 1, a mimic loss that is not added gives neither key
    assert last["loss_mimic"] > 0 and 0 < last["mimic/matching_ratio"] < 1
    assert last["total_loss"] > last["loss_mimic"]
    assert (out / "student_final.pth").is_file()
