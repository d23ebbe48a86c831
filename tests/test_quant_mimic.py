"""QuantMimicRCNN + the mimic trainer: frozen teacher, loss goes down, export, configs, errors, GLOO."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, MINI_OPTS, STUDENT_CONFIG, read_metrics, registered_mini_shapes, run_train_net
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, build_model
from detectron2.utils.env import seed_all_rng

from quant_mimic.config import build_config, load_teacher_config
from quant_mimic.engine import Trainer
from quant_mimic.engine.export import export_student
from quant_mimic.errors import QuantMimicInputError
from quant_mimic.modeling import MimicLoss, QuantizedReLU

QM_CONFIG = CONFIGS / "qm_R_tiny_FPN.yaml"
TEST_DATA = ["DATASETS.TRAIN", "('qmtest_shapes_train',)", "DATASETS.TEST", "('qmtest_shapes_val',)"]


@pytest.fixture(scope="module", autouse=True)
def test_datasets(tmp_path_factory):
    with registered_mini_shapes(tmp_path_factory.mktemp("data"), "qmtest_shapes"):
        yield


def write_teacher(folder, width_divisor=4, num_classes=5, quantized=True):
    """A small teacher config (ResNet18-1-4 FPN) and a checkpoint of its (untrained) weights."""
    config = folder / f"teacher_d{width_divisor}_c{num_classes}.yaml"
    config.write_text(
        f'_BASE_: "{STUDENT_CONFIG}"\n'
        f"MODEL:\n  RESNETS:\n    WIDTH_DIVISOR: {width_divisor}\n"
        f"  ROI_HEADS:\n    NUM_CLASSES: {num_classes}\n"
        f"  QUANTIZER:\n    ENABLED: {quantized}\n"
    )
    cfg = build_config(str(config))
    torch.manual_seed(0)
    weights = folder / f"teacher_d{width_divisor}_c{num_classes}.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    return config, weights


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return write_teacher(tmp_path_factory.mktemp("teacher"))


def qm_cfg(teacher, output_dir, *extra):
    config, weights = teacher
    opts = [*TEST_DATA, *MINI_OPTS[4:], "MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(config),
            "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(weights), "MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES", "0",
            "OUTPUT_DIR", str(output_dir), "SOLVER.IMS_PER_BATCH", "2", "TEST.EVAL_PERIOD", "0", *extra]  # fmt: skip
    cfg = build_config(str(QM_CONFIG), opts)
    cfg.freeze()
    return cfg


@pytest.fixture(scope="module")
def trained_qm(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("qm")
    cfg = qm_cfg(teacher, out, "SOLVER.MAX_ITER", "30", "DATASETS.TEST", "()", "SOLVER.BASE_LR", "0.01")
    seed_all_rng(cfg.SEED)  # as train_net.py's set-up: the same weights and batches every run
    trainer = Trainer(cfg)
    model = trainer.model
    teacher_before = copy.deepcopy(model.teacher.model.state_dict())
    trainer.resume_or_load(resume=False)
    trainer.train()
    return cfg, trainer, teacher_before


@pytest.mark.slow  # uses the 30-iteration run
def test_teacher_parameters_and_bn_buffers_are_bit_identical(trained_qm):
    _, trainer, before = trained_qm
    after = trainer.model.teacher.model.state_dict()
    assert any("running_mean" in k for k in after) and any("num_batches_tracked" in k for k in after)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert not trainer.model.teacher.training
    assert all(not p.requires_grad for p in trainer.model.teacher.parameters())


def first_and_last(trainer, name: str, n: int = 5) -> tuple[float, float]:
    """Means of the first and of the last ``n`` values ``name`` took in training."""
    history = [v for v, _ in trainer.storage.history(name).values()]
    return sum(history[:n]) / n, sum(history[-n:]) / n


@pytest.mark.slow  # uses the 30-iteration run
def test_qm_iterations_lower_the_total_loss_and_the_student_comes_to_mimic_the_teacher(trained_qm):
    cfg, trainer, _ = trained_qm
    first, last = first_and_last(trainer, "total_loss")
    assert last < first
    # the mimic term trains the student: over 30 iterations its RoI features come closer to the teacher's
    # (seeded run: loss_mimic 1.26 -> 0.53, matching ratio 0.46 -> 0.61; a detached mimic term: 1.29 ->
    # 1.36 and 0.46 -> 0.41)
    first, last = first_and_last(trainer, "loss_mimic")
    assert last < 0.75 * first
    first, last = first_and_last(trainer, "mimic/matching_ratio")
    assert last > first + 0.05
    metrics = read_metrics(Path(cfg.OUTPUT_DIR))
    assert metrics[-1]["loss_mimic"] > 0 and metrics[-1]["mimic/matching_ratio"] < 1


@pytest.mark.slow  # uses the 30-iteration run
def test_student_export_predicts_like_the_meta_architecture(trained_qm, tmp_path):
    cfg, trainer, _ = trained_qm
    weights, config = export_student(trainer.model, cfg, str(tmp_path))
    assert (tmp_path / "student_final.pth").is_file()
    # the export written at the end of training, and one written now, both load into a plain GeneralizedRCNN
    assert (Path(cfg.OUTPUT_DIR) / "student_final.pth").is_file()
    student_cfg = build_config(config)
    assert student_cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    student = build_model(student_cfg)
    DetectionCheckpointer(student).load(weights)
    student.eval()
    trainer.model.eval()
    mapper = DatasetMapper(cfg, is_train=False)
    inputs = [mapper(d) for d in DatasetCatalog.get("qmtest_shapes_val")[:2]]
    with torch.no_grad():
        ours, theirs = trainer.model(inputs), student(inputs)
    trainer.model.train()
    for a, b in zip(ours, theirs):
        a, b = a["instances"], b["instances"]
        assert len(a) == len(b)
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        assert torch.equal(a.scores, b.scores)


@pytest.mark.parametrize(
    "config, meta_arch, q_teacher, q_student",
    [
        ("qm_R_tiny_FPN.yaml", "QuantMimicRCNN", True, True),
        ("shapes/mimic_R18_16_FPN.yaml", "QuantMimicRCNN", False, False),
        ("shapes/qm_teacher_only_R18_16_FPN.yaml", "QuantMimicRCNN", True, False),
        ("shapes/student_R18_16_FPN_scratch.yaml", "GeneralizedRCNN", None, None),
    ],
)
def test_each_mode_quantizes_what_it_claims(config, meta_arch, q_teacher, q_student):
    cfg = build_config(str(CONFIGS / config))
    assert cfg.MODEL.META_ARCHITECTURE == meta_arch
    if q_teacher is not None:
        loss = MimicLoss(cfg)
        assert (loss.quantize_teacher, loss.quantize_student) == (q_teacher, q_student)
        teacher_cfg = build_config(cfg.MODEL.QUANT_MIMIC.TEACHER_CONFIG)
        assert teacher_cfg.MODEL.QUANTIZER.ENABLED == q_teacher  # mimic's teacher is full precision
    assert not cfg.MODEL.QUANTIZER.ENABLED  # a student never quantizes its own features here ...


def test_quantization_only_ablation_quantizes_the_students_own_features():
    cfg = build_config(str(CONFIGS / "shapes" / "quant_only_R18_16_FPN.yaml"))  # ... except this ablation
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    features = model.backbone(torch.randn(1, 3, 64, 64))
    for f in features.values():
        assert torch.equal(f, f.round()) and f.min() >= 0  # stride 1: non-negative integers


def test_missing_teacher_weights_are_refused(teacher, tmp_path):
    cfg = qm_cfg(teacher, tmp_path, "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(tmp_path / "none.pth"))
    with pytest.raises(
        QuantMimicInputError, match=r"Teacher weights .*none.pth.* do not exist: train the teacher"
    ):
        Trainer(cfg)


def test_teacher_weights_of_another_config_are_refused_with_the_unmatched_keys(teacher, tmp_path):
    _, other_weights = write_teacher(tmp_path, width_divisor=8)
    cfg = qm_cfg(teacher, tmp_path, "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(other_weights))
    with pytest.raises(
        QuantMimicInputError, match=r"do not match the teacher config .*wrong shape .*backbone\."
    ):
        Trainer(cfg)


def test_teacher_with_other_classes_is_refused(tmp_path):
    other = write_teacher(tmp_path, num_classes=3)
    with pytest.raises(QuantMimicInputError, match="has 3 classes but the student has 5"):
        Trainer(qm_cfg(other, tmp_path))


@pytest.mark.parametrize(
    "opts, error",
    [
        (["MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(CONFIGS / "shapes" / "teacher_VGG4_RFCN.yaml")],
         r"has no feature map p2 at the student's stride 4: use a teacher with the same FPN levels"),
        (["MODEL.QUANT_MIMIC.ADAPT_KERNEL_SIZE", "2"], r"ADAPT_KERNEL_SIZE is 2: use 1 or 3\."),
        (["MODEL.QUANT_MIMIC.NUM_ROIS_PER_IMAGE", "0"],
         r"NUM_ROIS_PER_IMAGE is 0: use 1 to ROI_HEADS.BATCH_SIZE_PER_IMAGE \(128\)\."),
        (["MODEL.QUANT_MIMIC.NUM_ROIS_PER_IMAGE", "129"], r"NUM_ROIS_PER_IMAGE is 129: use 1 to"),
    ],
)  # fmt: skip
def test_mimic_settings_the_model_cannot_use_are_refused(opts, error):
    with pytest.raises(QuantMimicInputError, match=error):
        build_model(build_config(str(QM_CONFIG), ["MODEL.DEVICE", "cpu", *opts]))


def test_the_trainer_builds_the_teacher_from_the_config_the_run_read(teacher, tmp_path):
    """train_net.py reads the teacher's yaml once and passes the config on: the model's teacher is built
    from that config (here without its quantizer), not from the file read again."""
    cfg = qm_cfg(teacher, tmp_path)
    teacher_cfg = load_teacher_config(cfg)
    teacher_cfg.MODEL.QUANTIZER.ENABLED = False
    model = Trainer.build_model(cfg, teacher_cfg)
    assert model.teacher.cfg is teacher_cfg
    assert not any(isinstance(m, QuantizedReLU) for m in model.teacher.model.modules())
    assert any(isinstance(m, QuantizedReLU) for m in Trainer.build_model(cfg).teacher.model.modules())
    # the trainer passes it to DefaultTrainer's build_model call
    assert Trainer(cfg, teacher_cfg).bare_model.teacher.cfg is teacher_cfg


class WidenedP3(Backbone):
    """The tiny ResNet FPN with p3 widened to twice the channels: mimicked maps of two channel counts."""

    def __init__(self, fpn):
        super().__init__()
        self.fpn = fpn
        self.widen = torch.nn.Conv2d(
            fpn.output_shape()["p3"].channels, 2 * fpn.output_shape()["p3"].channels, 1
        )

    def forward(self, x):
        return {**self.fpn(x), "p3": self.widen(self.fpn(x)["p3"])}

    @property
    def size_divisibility(self):
        return self.fpn.size_divisibility

    def output_shape(self):
        p3 = self.fpn.output_shape()["p3"]
        return {**self.fpn.output_shape(), "p3": ShapeSpec(channels=2 * p3.channels, stride=p3.stride)}


def build_widened_p3_fpn_for_tests(cfg, input_shape):
    from quant_mimic.modeling.backbone.tiny_resnet import build_tiny_resnet_fpn_backbone

    return WidenedP3(build_tiny_resnet_fpn_backbone(cfg, input_shape))


if build_widened_p3_fpn_for_tests.__name__ not in BACKBONE_REGISTRY:
    BACKBONE_REGISTRY.register(build_widened_p3_fpn_for_tests)


def test_teacher_maps_of_several_channel_counts_get_one_adapter_per_level(tmp_path):
    teacher = tmp_path / "teacher.yaml"  # its own RPN and box head read p2 only, so it builds
    teacher.write_text(
        f'_BASE_: "{STUDENT_CONFIG}"\nMODEL:\n  BACKBONE:\n    NAME: "build_widened_p3_fpn_for_tests"\n'
        '  ANCHOR_GENERATOR:\n    SIZES: [[12]]\n  RPN:\n    IN_FEATURES: ["p2"]\n'
        '  ROI_HEADS:\n    IN_FEATURES: ["p2"]\n'
    )
    cfg = build_config(
        str(QM_CONFIG), ["MODEL.DEVICE", "cpu", "MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(teacher)]
    )
    model = build_model(cfg)  # the teacher's p3 is wider: each level gets its own adaptation conv
    t_channels = model.teacher.model.backbone.output_shape()
    assert [a.out_channels for a in model.adapter] == [
        t_channels[f].channels for f in ["p2", "p3", "p4", "p5"]
    ]
    assert len({a.out_channels for a in model.adapter}) == 2


@pytest.mark.parametrize("kernel, rois", [(1, 1), (3, 128)])
def test_mimic_settings_at_their_limits_are_used(kernel, rois):
    opts = [
        "MODEL.QUANT_MIMIC.ADAPT_KERNEL_SIZE",
        str(kernel),
        "MODEL.QUANT_MIMIC.NUM_ROIS_PER_IMAGE",
        str(rois),
    ]
    model = build_model(build_config(str(QM_CONFIG), ["MODEL.DEVICE", "cpu", *opts]))
    assert model.num_rois_per_image == rois and model.adapter.kernel_size == (kernel, kernel)
    # r() maps the student's 16 channels to the teacher's 64 and keeps the 7x7 RoI ("same" padding)
    assert model.adapter(torch.zeros(2, 16, 7, 7)).shape == (2, 64, 7, 7)


def test_untrained_teacher_fails_the_quick_ap_check(teacher, tmp_path):
    cfg = qm_cfg(teacher, tmp_path, "MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES", "4")
    with pytest.raises(
        QuantMimicInputError, match=r"reaches AP 0\.0 .* below MODEL.QUANT_MIMIC.TEACHER_MIN_AP"
    ):
        Trainer(cfg)


@pytest.mark.slow  # trains in two train_net.py processes
def test_qm_runs_in_two_gloo_processes(teacher, datasets_root, tmp_path):
    config, weights = teacher
    opts = [*MINI_OPTS, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", str(tmp_path), "TEST.EVAL_PERIOD", "0",
            "MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(config), "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(weights),
            "MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES", "0", "DATASETS.TEST", "()"]  # fmt: skip
    run = run_train_net(["--config-file", str(QM_CONFIG), "--num-gpus", "2", *opts], datasets_root)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "student_final.pth").is_file() and (tmp_path / "student_config.yaml").is_file()
    assert "loss_mimic" in read_metrics(tmp_path)[-1]


def test_the_training_step_is_detectron2s_own_and_adds_the_mimic_loss(teacher, tmp_path):
    """No copy of detectron2's step: SimpleTrainer.run_step calls the QuantMimicRCNN, whose losses hold
    loss_mimic; hooks run, the step logs loss_mimic and the matching ratio, GeneralizedRCNN.forward's vis_period works, and the
    checkpointer saves the QuantMimicRCNN itself."""
    from detectron2.engine import HookBase, SimpleTrainer

    from quant_mimic.modeling import QuantMimicRCNN

    cfg = qm_cfg(teacher, tmp_path, "VIS_PERIOD", "1", "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()")
    trainer = Trainer(cfg)
    assert type(trainer._trainer).run_step is SimpleTrainer.run_step
    assert isinstance(trainer._trainer.model, QuantMimicRCNN) and trainer.bare_model is trainer.model
    assert trainer.checkpointer.model is trainer.model

    calls = []

    class Probe(HookBase):
        def after_step(self):
            calls.append("after_step")

        def after_backward(self):  # called by detectron2 versions that have it (upstream main)
            calls.append("after_backward")

    trainer.register_hooks([Probe()])
    computed = []  # what the step's mimic loss computed, to compare with what it logged
    mimic_loss = trainer._trainer.model.mimic_loss
    compute = mimic_loss.loss_and_matching_ratio
    mimic_loss.loss_and_matching_ratio = lambda features: computed.append(compute(features)) or computed[-1]
    student, drawn = trainer.model.student, []
    student.visualize_training = lambda *args: drawn.append(len(args[1]))  # proposals per image
    trainer.resume_or_load(resume=False)
    trainer.train()
    history = trainer.storage.histories()
    ((losses, ratio),) = computed  # one step: one loss, one matching ratio per RoI (128 per image)
    logged_loss, logged_ratio = history["loss_mimic"].latest(), history["mimic/matching_ratio"].latest()
    assert logged_loss == pytest.approx(losses["loss_mimic"].item()) and logged_loss > 0
    assert ratio.shape == (128 * 2,)
    assert logged_ratio == pytest.approx(ratio.mean().item())  # the mean over the RoIs
    assert 0 < logged_ratio < 1
    assert history["total_loss"].latest() > history["loss_mimic"].latest()
    assert drawn == [cfg.SOLVER.IMS_PER_BATCH]  # GeneralizedRCNN.forward's vis_period (1) ran once
    expected = ["after_backward", "after_step"] if hasattr(HookBase, "after_backward") else ["after_step"]
    assert calls == expected
    saved = torch.load(tmp_path / "model_final.pth", weights_only=False)["model"]
    assert any(k.startswith("student.") for k in saved) and not any(k.startswith("module.") for k in saved)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="AMP needs CUDA")
def test_an_amp_step_runs_with_the_mimic_loss(teacher, tmp_path):
    from detectron2.engine import AMPTrainer
    from detectron2.utils.events import EventStorage

    cfg = qm_cfg(teacher, tmp_path, "SOLVER.AMP.ENABLED", "True", "MODEL.DEVICE", "cuda")
    trainer = Trainer(cfg)
    assert isinstance(trainer._trainer, AMPTrainer)
    with EventStorage(0) as storage:
        trainer.run_step()
        assert torch.isfinite(torch.tensor(storage.histories()["loss_mimic"].latest()))
