"""The main job's chains: which configs each runs, on which data, with which metric, beside which numbers
of the paper. ``pipeline --setting NAME`` picks one:

    shapes      the built-in data set (default): ResNet18-1-2 FPN teacher -> ResNet18-1-16 students, COCO AP
    voc         the paper's Pascal VOC setting (Table 7): ResNet-18 FPN Faster R-CNN teacher -> ResNet18-1-16
                students; VOC07+12 trainval, VOC07 test; AP50 (the paper's mAP) and the AP50 of every class
    voc_single  the same with the paper's single-level Faster R-CNN (RPN and ROIAlign on res4)
    wider_face  the paper's WIDER FACE setting (Tables 2-6): VGG-1-4 R-FCN teacher -> VGG-1-32 students,
                grayscale, OHEM; the official easy / medium / hard AP on val

Each chain is: full-precision teacher -> quantized teacher (fine-tuned from it) -> students from scratch,
by plain mimic of the full-precision teacher, and by Quantization Mimic of the quantized one. Plain
Python (no detectron2), so that the pipeline lists and prints a chain without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Tuple


@dataclass(frozen=True)
class Metric:
    """One column of the results table: ``label`` (the header and the results.json key) and ``key`` (the
    metrics.json key of the final evaluation, e.g. ``bbox/AP50`` or ``wider_face/easy``; percent)."""

    label: str
    key: str


@dataclass(frozen=True)
class StageSpec:
    """One model of a chain: ``name`` (its folder under ``--output-dir``; students get ``_seed<N>``),
    ``config`` (relative to configs/), a one-line description, and the paper's numbers for it
    (``Chain.paper_metrics`` label -> value; empty where the paper has none)."""

    name: str
    config: str
    description: str
    paper: Dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Chain:
    """A chain of configs (the paper's setting it reproduces), its data and its metric.

    teacher / teacher_quant: the full-precision and the quantized teacher; students: scratch, mimic and
    QM (names ``student_<kind>``), in that order. metrics: the results table's columns (the first one is
    the evaluation that marks a stage as finished); paper_metrics: the labels the paper reports, and
    paper_source where. data_folders: what ``--data-root`` must hold (empty: generated). smoke_opts:
    the overrides of ``--smoke`` for every stage (iterations, batch, image size, and what a few
    iterations cannot meet); the teacher of a smoke run starts from scratch (``MODEL.WEIGHTS ""``).
    imagenet: ``(convert --model, extra convert options)`` for the teacher's ImageNet initialisation,
    or None where the teacher config trains from scratch. typical_image: (height, width, objects) of a
    typical image of the data set, and val_images: the val set's size (``pipeline --estimate`` estimates
    a chain's time from them).
    """

    name: str
    title: str
    teacher: StageSpec
    teacher_quant: StageSpec
    students: Tuple[StageSpec, ...]
    metrics: Tuple[Metric, ...]
    paper_metrics: Tuple[str, ...] = ()
    paper_source: str = ""
    data_folders: Tuple[str, ...] = ()
    smoke_opts: Tuple[str, ...] = ()
    imagenet: Tuple[str, Tuple[str, ...]] | None = None
    typical_image: Tuple[int, int, int] = (192, 192, 3)
    val_images: int = 0

    @property
    def done_key(self) -> str:
        """The metrics.json key whose presence marks a run's final evaluation."""
        return self.metrics[0].key

    @property
    def summary_metrics(self) -> Tuple[str, ...]:
        """Labels averaged over seeds in the students' summary."""
        return self.paper_metrics or ("AP", "AP50")

    def stages(self) -> Tuple[StageSpec, ...]:
        return (self.teacher, self.teacher_quant, *self.students)


COCO_METRICS = tuple(Metric(k, f"bbox/{k}") for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
# Iterations of a smoke run: each stage trains, checkpoints and is evaluated once.
SMOKE_ITERATIONS = "6"
_SMOKE_COMMON = (
    "SOLVER.MAX_ITER", SMOKE_ITERATIONS,
    "SOLVER.STEPS", "()",
    "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.CHECKPOINT_PERIOD", "1000",
)  # fmt: skip

SHAPES = Chain(
    name="shapes",
    title="built-in data set",
    teacher=StageSpec(
        "teacher_R18_2_FPN", "shapes/teacher_R18_2_FPN.yaml", "full-precision teacher, ResNet18-1-2 FPN"
    ),
    teacher_quant=StageSpec(
        "teacher_R18_2_FPN_quant",
        "shapes/teacher_R18_2_FPN_quant.yaml",
        "quantized teacher (fine-tuned with Q)",
    ),
    students=(
        StageSpec(
            "student_scratch", "shapes/student_R18_16_FPN_scratch.yaml", "ResNet18-1-16 student, from scratch"
        ),
        StageSpec(
            "student_mimic", "shapes/mimic_R18_16_FPN.yaml", "ResNet18-1-16 student, mimic (Li et al.)"
        ),
        StageSpec("student_qm", "qm_R_tiny_FPN.yaml", "ResNet18-1-16 student, Quantization Mimic"),
    ),
    metrics=COCO_METRICS,
    typical_image=(192, 192, 5),  # 192 x 192 px, 2 to 8 objects (quant_mimic.data.shapes_spec)
    val_images=200,  # quantmimic_shapes_val
    smoke_opts=(
        "DATASETS.TRAIN",
        "('quantmimic_shapes_mini_train',)",
        "DATASETS.TEST",
        "('quantmimic_shapes_mini_val',)",
        "SOLVER.IMS_PER_BATCH",
        "2",
        *_SMOKE_COMMON,
        "DATALOADER.NUM_WORKERS",
        "0",
        "MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES",
        "0",
    ),  # fmt: skip
)

# The paper's Table 7 (VOC07 test mAP, %).
VOC = Chain(
    name="voc",
    title="Pascal VOC (paper Table 7)",
    teacher=StageSpec(
        "teacher_R18_FPN", "voc/teacher_R18_FPN.yaml", "full-precision teacher, ResNet-18 FPN", {"AP50": 72.9}
    ),
    teacher_quant=StageSpec(
        "teacher_R18_FPN_quant",
        "voc/teacher_R18_FPN_quant.yaml",
        "quantized teacher (fine-tuned with Q)",
        {"AP50": 73.3},
    ),
    students=(
        StageSpec(
            "student_scratch",
            "voc/student_R18_16_FPN_scratch.yaml",
            "ResNet18-1-16 student, from scratch",
            {"AP50": 40.5},
        ),
        StageSpec(
            "student_mimic",
            "voc/mimic_R18_16_FPN.yaml",
            "ResNet18-1-16 student, mimic (Li et al.)",
            {"AP50": 44.6},
        ),
        StageSpec(
            "student_qm",
            "voc/qm_R18_16_FPN.yaml",
            "ResNet18-1-16 student, Quantization Mimic",
            {"AP50": 47.0},
        ),
    ),
    metrics=(Metric("AP50", "bbox/AP50"), Metric("AP", "bbox/AP"), Metric("AP75", "bbox/AP75")),
    paper_metrics=("AP50",),
    paper_source="Table 7, VOC07 test mAP (11-point VOC07 AP50)",
    data_folders=("VOC2007", "VOC2012"),
    smoke_opts=(
        "SOLVER.IMS_PER_BATCH",
        "2",
        *_SMOKE_COMMON,
        "INPUT.MIN_SIZE_TRAIN",
        "(128,)",
        "INPUT.MAX_SIZE_TRAIN",
        "256",
        "INPUT.MIN_SIZE_TEST",
        "128",
        "INPUT.MAX_SIZE_TEST",
        "256",
        "MODEL.QUANT_MIMIC.TEACHER_MIN_AP",
        "0.0",
    ),  # fmt: skip
    imagenet=("resnet18", ()),
    typical_image=(375, 500, 3),  # VOC: 500 x 375 px, 2.4 objects per image
    val_images=4952,  # VOC07 test
)

# The same chain with the paper's single-level Faster R-CNN (RPN and ROIAlign on res4, stride 16, the paper's
# anchors; configs/voc/*_single*.yaml) instead of FPN.
VOC_SINGLE = replace(
    VOC,
    name="voc_single",
    title="Pascal VOC, single-level Faster R-CNN (paper Table 7)",
    teacher=replace(
        VOC.teacher,
        name="teacher_R18_single",
        config="voc/teacher_R18_single.yaml",
        description="full-precision teacher, ResNet-18 single-level (res4)",
    ),
    teacher_quant=replace(
        VOC.teacher_quant, name="teacher_R18_single_quant", config="voc/teacher_R18_single_quant.yaml"
    ),
    students=tuple(replace(spec, config=spec.config.replace("_FPN", "_single")) for spec in VOC.students),
)

# The paper's WIDER FACE tables (val AP %, easy / medium / hard).
WIDER_FACE = Chain(
    name="wider_face",
    title="WIDER FACE (paper Tables 2-6)",
    teacher=StageSpec(
        "teacher_VGG4_RFCN",
        "wider_face/teacher_VGG4_RFCN.yaml",
        "full-precision teacher, VGG-1-4 R-FCN",
        {"easy": 82.4, "medium": 62.5, "hard": 26.3},
    ),
    teacher_quant=StageSpec(
        "teacher_VGG4_RFCN_quant",
        "wider_face/teacher_VGG4_RFCN_quant.yaml",
        "quantized teacher (fine-tuned with Q)",
        {"easy": 83.7, "medium": 65.0, "hard": 27.4},
    ),
    students=(
        StageSpec(
            "student_scratch",
            "wider_face/student_VGG32_RFCN_scratch.yaml",
            "VGG-1-32 student, from scratch",
            {"easy": 71.3, "medium": 55.4, "hard": 23.8},
        ),
        StageSpec(
            "student_mimic",
            "wider_face/mimic_VGG32_RFCN.yaml",
            "VGG-1-32 student, mimic (Li et al.)",
            {"easy": 71.9, "medium": 58.2, "hard": 25.6},
        ),
        StageSpec(
            "student_qm",
            "wider_face/qm_VGG32_RFCN.yaml",
            "VGG-1-32 student, Quantization Mimic",
            {"easy": 73.9, "medium": 62.1, "hard": 27.6},
        ),
    ),
    metrics=tuple(Metric(k, f"wider_face/{k}") for k in ("easy", "medium", "hard")),
    paper_metrics=("easy", "medium", "hard"),
    paper_source="WIDER FACE val AP, teachers table and comparison table (Table 5 no/no and yes/yes rows)",
    data_folders=("WIDER_FACE",),
    smoke_opts=(
        "SOLVER.IMS_PER_BATCH",
        "2",
        *_SMOKE_COMMON,
        "INPUT.MIN_SIZE_TRAIN",
        "(160,)",  # the toy images' size; tests run at the original size
        "MODEL.QUANT_MIMIC.TEACHER_MIN_AP",
        "0.0",
    ),  # fmt: skip
    imagenet=("vgg16", ("--grayscale",)),
    typical_image=(750, 1024, 12),  # WIDER FACE: 1024 px wide, ~12 faces per image
    val_images=3226,  # WIDER FACE val
)

CHAINS: Dict[str, Chain] = {s.name: s for s in (SHAPES, VOC, VOC_SINGLE, WIDER_FACE)}


def write_toy_data(chain: Chain, root: Path) -> Path:
    """Write the toy data set of ``chain`` (official layout, :mod:`quant_mimic.data.official_toy`)
    under ``root`` and return ``root``."""
    from quant_mimic.data.official_toy import write_toy_voc, write_toy_wider_face

    writers = {VOC.name: write_toy_voc, VOC_SINGLE.name: write_toy_voc, WIDER_FACE.name: write_toy_wider_face}
    writers[chain.name](root)
    return root


def register_data(chain: Chain, root: Path) -> None:
    """Register the data sets of ``chain`` in this process, read from ``root`` (detectron2's
    ``DETECTRON2_DATASETS``), as ``train_net.py`` does in every stage."""
    from quant_mimic.data import register_checked_voc, register_wider_face

    if chain in (VOC, VOC_SINGLE):
        register_checked_voc(root)
    elif chain is WIDER_FACE:
        register_wider_face(root)
