"""QuantMimic's config, in one module: every key it adds to detectron2's (with its meaning), building a
run's config from a file and overrides, resolving paths named inside a config, the teacher's config, the
student's / deployed config, and the mimic loss's quantizer (the teacher's unless set explicitly).

Imports nothing from :mod:`quant_mimic.modeling`, so every model module can import it.

Every problem found here is a :class:`QuantMimicInputError` whose message is one sentence that names the
problem and the fix.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Sequence

import torch
import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.config import CfgNode as CN

from .errors import QuantMimicInputError

__all__ = [
    "DEFAULT_QUANTIZER_STRIDE",
    "DEFAULT_QUANTIZER_TYPE",
    "add_quantmimic_config",
    "build_config",
    "deployed_config",
    "fall_back_to_cpu",
    "load_teacher_config",
    "mimic_quantizer",
    "resolve_config_path",
    "student_config",
    "yaml_error_sentence",
]

# The paper's quantizer (uniform code book, stride 1): MODEL.QUANTIZER's defaults, and the mimic loss's
# where neither its own keys nor a quantized teacher say otherwise.
DEFAULT_QUANTIZER_TYPE = "uniform"
DEFAULT_QUANTIZER_STRIDE = 1.0
# Meta-architecture of a Quantization Mimic config; its teacher and student are GeneralizedRCNNs.
QUANT_MIMIC_ARCH = "QuantMimicRCNN"
PLAIN_ARCH = "GeneralizedRCNN"
TEACHER_KEY = "MODEL.QUANT_MIMIC.TEACHER_CONFIG"


def add_quantmimic_config(cfg: CN) -> CN:
    """Add QuantMimic's keys to a detectron2 config (in place; a config that has them is left as it is)
    and return it. Values given are the defaults."""
    if "QUANT_MIMIC" in cfg.MODEL:
        return cfg

    # --- Tiny ResNets (modeling/backbone/tiny_resnet.py) ---
    # Divide every ResNet width (stem, res2..res5, bottlenecks) and the FPN width by this (floored, at
    # least 1 channel): 1 = full width (the paper's teacher), 16 = ResNet18-1-16 (the paper's VOC student).
    cfg.MODEL.RESNETS.WIDTH_DIVISOR = 1

    # --- VGG-16 backbones (modeling/backbone/vgg.py) ---
    cfg.MODEL.VGG = CN()
    # Divide every VGG conv width (and the FPN width with build_vgg_fpn_backbone) by this (floored, at
    # least 1 channel): 1 = VGG-16, 4 = VGG-1-4 (paper's WIDER FACE teacher), 32 = VGG-1-32 (student).
    cfg.MODEL.VGG.WIDTH_DIVISOR = 1
    # Normalization after every conv: "" (none, convs with bias: original VGG), "BN", "GN", "SyncBN",
    # "FrozenBN". The paper does not say; from-scratch tiny VGGs train with "BN".
    cfg.MODEL.VGG.NORM = ""
    # Output feature maps, any of vgg1..vgg5 (strides 1, 2, 4, 8, 16). R-FCN / Faster R-CNN: ["vgg5"].
    cfg.MODEL.VGG.OUT_FEATURES = ["vgg5"]

    # --- R-FCN head (modeling/rfcn.py; ROI_HEADS.NAME "RFCNROIHeads"), the paper's WIDER FACE detector ---
    # Grayscale input (paper, WIDER FACE) needs no key: INPUT.FORMAT "L" with one-value PIXEL_MEAN/STD.
    cfg.MODEL.RFCN = CN()
    # k: each RoI is split into k x k position-sensitive bins; also the mimic RoI size (paper: 3x3).
    cfg.MODEL.RFCN.POOL_SIZE = 3
    # One set of k*k*4 box maps for all classes (R-FCN paper) instead of k*k*4*C.
    cfg.MODEL.RFCN.CLS_AGNOSTIC_BBOX_REG = True
    # Channels of a 1x1 conv + ReLU between the feature map and the score maps; 0 = none (R-FCN's
    # ResNet-101 uses 1024; the paper's tiny VGGs are not said to have one).
    cfg.MODEL.RFCN.REDUCE_DIM = 0
    # Online hard example mining: label all ROI_HEADS.BATCH_SIZE_PER_IMAGE sampled proposals, and train
    # on the OHEM_BATCH_SIZE_PER_IMAGE with the highest classification + box loss (paper: OHEM on).
    cfg.MODEL.RFCN.OHEM = False
    # RoIs per image kept by OHEM (R-FCN: 128).
    cfg.MODEL.RFCN.OHEM_BATCH_SIZE_PER_IMAGE = 128

    # --- The quantizer inside a model ("quantized ReLU", modeling/quantizer.py) ---
    # It replaces the last activation of the feature extractor. Used to fine-tune the quantized teacher
    # (paper Sec. 3.2) and for the paper's "quantization only on the student, no mimic" ablation.
    cfg.MODEL.QUANTIZER = CN()
    # Insert the quantized ReLU after the feature extractor (every FPN output level).
    cfg.MODEL.QUANTIZER.ENABLED = False
    # "uniform": code book {0, s, 2s, ...} (paper); "pow2": {0, s, 2s, 4s, ...} (paper's ablation).
    cfg.MODEL.QUANTIZER.TYPE = DEFAULT_QUANTIZER_TYPE
    # Quantization stride s. The paper uses 1 for every experiment.
    cfg.MODEL.QUANTIZER.STRIDE = DEFAULT_QUANTIZER_STRIDE
    # Where Q sits: "outputs" = every output of the backbone (an FPN's p2..p6, linear; a single-level
    # backbone's res4, post-ReLU); "bottom_up" = the outputs of an FPN's bottom-up stages (res2..res5,
    # post-ReLU), which its lateral convs read. Paper: the last activation of the feature extractor.
    cfg.MODEL.QUANTIZER.PLACEMENT = "outputs"
    # Fit s to the full-precision teacher instead (not in the paper, whose s = 1 suits ImageNet-trained
    # features): 0 = STRIDE as given; K > 0 = s is set so that the STRIDE_PERCENTILE-th percentile of the
    # positive activations Q sits on spans K codes (s = percentile / K), computed once by train_net.py
    # from MODEL.WEIGHTS on the first STRIDE_FIT_IMAGES images of DATASETS.TRAIN[0] and written into the
    # run's config.yaml as STRIDE. A student reads it there, beside its TEACHER_WEIGHTS (engine/stride_fit.py).
    cfg.MODEL.QUANTIZER.STRIDE_CODES = 0
    cfg.MODEL.QUANTIZER.STRIDE_PERCENTILE = 99.0
    cfg.MODEL.QUANTIZER.STRIDE_FIT_IMAGES = 64

    # --- The Quantization Mimic meta-architecture (MODEL.META_ARCHITECTURE = "QuantMimicRCNN") ---
    cfg.MODEL.QUANT_MIMIC = CN()
    # Config file of the frozen teacher (a GeneralizedRCNN config of this project). A relative path is
    # resolved against the directory of the config file that names it.
    cfg.MODEL.QUANT_MIMIC.TEACHER_CONFIG = ""
    # Checkpoint of the trained teacher (a detectron2 checkpoint or a QuantMimic export).
    cfg.MODEL.QUANT_MIMIC.TEACHER_WEIGHTS = ""
    # lambda, the weight of the mimic loss. Paper: 1 (VOC sweep 0.1 / 1 / 10, 1 best).
    cfg.MODEL.QUANT_MIMIC.LOSS_WEIGHT = 1.0
    # "per_element": mean over proposals, channels and RoI cells (sum / (2 N C H W)). "as_written":
    # the paper's 1/(2N) sum, C*H*W times larger: it diverges in 6 iterations here, and with gradient
    # clipping the student learns nothing (AP 0; measured in the project README, "Loss normalisation").
    cfg.MODEL.QUANT_MIMIC.NORMALIZE = "per_element"
    # Kernel size of the adaptation conv r() that maps student channels to teacher channels
    # (the paper does not give it): 1 or 3.
    cfg.MODEL.QUANT_MIMIC.ADAPT_KERNEL_SIZE = 1
    # Quantize the teacher's RoI features in the mimic loss (paper: yes).
    cfg.MODEL.QUANT_MIMIC.QUANTIZE_TEACHER = True
    # Quantize the student's adapted RoI features in the mimic loss (paper: yes; gradient is
    # straight-through).
    cfg.MODEL.QUANT_MIMIC.QUANTIZE_STUDENT = True
    # Quantizer of the mimic loss, "uniform" or "pow2"; "" = the quantized teacher's MODEL.QUANTIZER.TYPE
    # (uniform for a full-precision teacher). See mimic_quantizer().
    cfg.MODEL.QUANT_MIMIC.QUANTIZER_TYPE = ""
    # Its stride; 0 = the quantized teacher's MODEL.QUANTIZER.STRIDE (1 for a full-precision teacher).
    cfg.MODEL.QUANT_MIMIC.QUANTIZER_STRIDE = 0.0
    # Feature maps the mimic RoIs are pooled from; [] = ROI_HEADS.IN_FEATURES (an FPN's p2..p5). An
    # FPN's bottom-up stages (["res2", "res3", "res4", "res5"], post-ReLU, where a "bottom_up" teacher
    # quantizes) are pooled at the box head's level assignment, one adaptation conv per level. Paper:
    # the last feature-extractor layer.
    cfg.MODEL.QUANT_MIMIC.IN_FEATURES = []
    # Apply a ReLU to the RoI features of both networks before quantizing and comparing them: the
    # paper quantizes the output of a ReLU, while FPN outputs are not rectified.
    cfg.MODEL.QUANT_MIMIC.FEATURE_RELU = True
    # Proposals per image used for mimicking: the first N of the student's sampled proposals
    # (paper: 128, the Faster R-CNN RoI batch). Must not exceed ROI_HEADS.BATCH_SIZE_PER_IMAGE.
    cfg.MODEL.QUANT_MIMIC.NUM_ROIS_PER_IMAGE = 128
    # Matching ratio (paper Fig. 5): share of RoI feature elements with |f_t - f_s| < this.
    cfg.MODEL.QUANT_MIMIC.MATCH_THRESHOLD = 0.3
    # Before training, evaluate the teacher on this many images of DATASETS.TEST[0] and refuse to
    # train if its AP is below TEACHER_MIN_AP (a wrong or untrained teacher). 0 disables the check.
    cfg.MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES = 50
    cfg.MODEL.QUANT_MIMIC.TEACHER_MIN_AP = 1.0

    # --- The deployed form of a detector (quant_mimic.deploy) ---
    # The other test-time settings are detectron2's MODEL.RPN.*_TEST, MODEL.ROI_HEADS.*_TEST and
    # TEST.DETECTIONS_PER_IMAGE.
    cfg.MODEL.DEPLOY = CN()
    # (box, class) pairs above the score threshold kept per image before the final NMS: a fixed size,
    # so that nothing waits on the device. detectron2 keeps all of them; chosen by measurement (README).
    cfg.MODEL.DEPLOY.CANDIDATES_PER_IMAGE = 1000
    return cfg


# --------------------------------------------------------------------------------------------------------
# Building a config from a file


def yaml_error_sentence(error: yaml.YAMLError, config_file: str, what: str = "Config file") -> str:
    """One sentence for a YAML syntax error: the file (a ``_BASE_`` one if the error is there), the line
    and column where the broken construct starts, and what the parser expected where."""

    def at(mark) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    problem_mark = getattr(error, "problem_mark", None)
    context_mark = getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    mark = context_mark or problem_mark
    where = config_file
    if mark is not None:
        name = mark.name if mark.name and not mark.name.startswith("<") else config_file
        where = f"{name} {at(mark)}"
    detail = f"{context}: {problem}" if context else problem
    if problem_mark is not None and mark is not problem_mark:
        detail += f" at {at(problem_mark)}"
    return (
        f"{what} {where} is not valid YAML ({' '.join(detail.split())}): fix the syntax there "
        "(indentation, a missing ':' or closing bracket, a tab)."
    )


def _merge(merge: Callable, arg, config_file: str, source: str, what: str) -> None:
    """``merge(arg)`` (a ``merge_from_file`` / ``merge_from_list``) with its errors as one sentence each.

    ``source`` names what is merged in the sentences ("<file>", "the command-line overrides"); ``what``
    says which config ``config_file`` is ("Config file")."""
    try:
        merge(arg)
    except yaml.YAMLError as e:
        raise QuantMimicInputError(yaml_error_sentence(e, config_file, what)) from None
    except OSError as e:  # the file itself, or a _BASE_ file it names, cannot be read
        if e.filename and os.path.abspath(str(e.filename)) == os.path.abspath(config_file):
            raise QuantMimicInputError(
                f"{what} {config_file} cannot be read ({e.strerror or e}): fix its permissions."
            ) from None
        raise QuantMimicInputError(
            f"{source} names {e.filename or 'a file'} (as _BASE_), which cannot be read "
            f"({e.strerror or e}): fix the _BASE_ path."
        ) from None
    except (KeyError, AssertionError, ValueError) as e:
        msg = " ".join(str(e.args[0] if e.args else e).strip("'\"").split())
        raise QuantMimicInputError(
            f"{source}: {msg}; check the key's spelling and value type against detectron2's defaults "
            "and projects/QuantMimic/quant_mimic/config.py."
        ) from None


def fall_back_to_cpu(cfg: CfgNode) -> str | None:
    """Set MODEL.DEVICE to "cpu" if it asks for CUDA and there is none; returns the device asked for when
    it fell back, else None."""
    requested = cfg.MODEL.DEVICE
    if requested.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).info("No CUDA device: running on the CPU (MODEL.DEVICE cpu).")
        cfg.MODEL.DEVICE = "cpu"
        return requested
    return None


def build_config(config_file: str, opts: Sequence[str] = (), *, cpu_fallback: bool = True) -> CfgNode:
    """detectron2 config + QuantMimic keys, merged with ``config_file`` and ``opts`` (not frozen), with
    MODEL.QUANT_MIMIC.TEACHER_CONFIG resolved (:func:`resolve_config_path`) and, with ``cpu_fallback``,
    MODEL.DEVICE cpu where CUDA is asked for but missing (:func:`fall_back_to_cpu`; a device torch does
    not know is refused), and
    DATALOADER.NUM_WORKERS -1 replaced by :func:`default_num_workers`."""
    cfg = add_quantmimic_config(get_cfg())
    if not config_file:
        raise QuantMimicInputError("No --config-file given: pass one of projects/QuantMimic/configs/*.yaml.")
    if not os.path.isfile(config_file):
        raise QuantMimicInputError(
            f"Config file {config_file} does not exist: pass one of projects/QuantMimic/configs/*.yaml."
        )
    _merge(cfg.merge_from_file, config_file, config_file, config_file, "Config file")
    _merge(cfg.merge_from_list, list(opts), config_file, "the command-line overrides", "Config file")
    try:
        torch.device(cfg.MODEL.DEVICE)
    except RuntimeError:
        raise QuantMimicInputError(
            f"MODEL.DEVICE {cfg.MODEL.DEVICE!r} is not a device torch knows: use cpu, or cuda (cuda:N for "
            "the N-th GPU)."
        ) from None
    if cpu_fallback:
        fall_back_to_cpu(cfg)
    if cfg.DATALOADER.NUM_WORKERS < 0:
        cfg.DATALOADER.NUM_WORKERS = default_num_workers(cfg.MODEL.DEVICE)
    cfg.MODEL.QUANT_MIMIC.TEACHER_CONFIG = resolve_config_path(
        cfg.MODEL.QUANT_MIMIC.TEACHER_CONFIG, config_file
    )
    return cfg


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_num_workers(device: str = "cuda") -> int:
    """DATALOADER.NUM_WORKERS where a config says -1. Training on the CPU: 0, the batches are loaded in
    the training process, whose threads use every core, so a worker process would only take turns with
    them (on 2 cores the main job's scratch student took 0.221-0.229 s per iteration with 0 workers
    against 0.250-0.263 s with 1, over 80 iterations). On a GPU: half the cores this process may run on,
    1 to 8 (enough to keep it fed with the built-in data set)."""
    if torch.device(device).type == "cpu":
        return 0
    return max(1, min(8, available_cores() // 2))


def resolve_config_path(path: str, config_file: str) -> str:
    """A config path named inside ``config_file``: as given if it exists, else relative to the folder
    of ``config_file`` or of one of its parents (so ``_BASE_`` chains across folders keep working)."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    folder = os.path.dirname(os.path.abspath(config_file))
    while True:
        candidate = os.path.join(folder, path)
        if os.path.exists(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return path  # not found: load_teacher_config reports it
        folder = parent


# --------------------------------------------------------------------------------------------------------
# The teacher's and the student's config


def load_teacher_config(cfg: CfgNode) -> CfgNode:
    """The teacher's full config, read from MODEL.QUANT_MIMIC.TEACHER_CONFIG, on the student's device."""
    path = cfg.MODEL.QUANT_MIMIC.TEACHER_CONFIG
    if not path or not os.path.isfile(path):
        raise QuantMimicInputError(
            f"{TEACHER_KEY} {path!r} is not a config file: point it at the teacher's "
            "yaml (e.g. configs/shapes/teacher_R18_FPN_quant.yaml)."
        )
    teacher_cfg = add_quantmimic_config(get_cfg())
    what = f"Teacher config ({TEACHER_KEY})"
    _merge(teacher_cfg.merge_from_file, path, path, f"Teacher config {path} ({TEACHER_KEY})", what)
    teacher_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    if teacher_cfg.MODEL.META_ARCHITECTURE != PLAIN_ARCH:
        raise QuantMimicInputError(
            f"Teacher config {path} has META_ARCHITECTURE {teacher_cfg.MODEL.META_ARCHITECTURE}: the "
            f"teacher must be a {PLAIN_ARCH} config."
        )
    if teacher_cfg.MODEL.ROI_HEADS.NUM_CLASSES != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise QuantMimicInputError(
            f"Teacher config {path} has {teacher_cfg.MODEL.ROI_HEADS.NUM_CLASSES} classes but the student "
            f"has {cfg.MODEL.ROI_HEADS.NUM_CLASSES}: use a teacher trained on the student's data set."
        )
    if fits_stride(teacher_cfg):
        teacher_cfg.MODEL.QUANTIZER.STRIDE = recorded_stride(
            teacher_cfg, cfg.MODEL.QUANT_MIMIC.TEACHER_WEIGHTS
        )
    return teacher_cfg


def fits_stride(cfg: CfgNode) -> bool:
    """Whether ``cfg`` quantizes its features with a stride fitted to the teacher (STRIDE_CODES > 0)."""
    return bool(cfg.MODEL.QUANTIZER.ENABLED) and cfg.MODEL.QUANTIZER.STRIDE_CODES > 0


def recorded_stride(cfg: CfgNode, weights: str) -> float:
    """The fitted stride of a quantized model trained with ``cfg``'s rule, as its run recorded it: the
    MODEL.QUANTIZER.STRIDE of the config.yaml beside ``weights`` (written by train_net.py), which
    must come from the same rule (STRIDE_CODES, STRIDE_PERCENTILE)."""
    q = cfg.MODEL.QUANTIZER
    record = os.path.join(os.path.dirname(os.path.abspath(weights)), "config.yaml") if weights else ""
    rule = f"MODEL.QUANTIZER.STRIDE_CODES {q.STRIDE_CODES}"
    if not record or not os.path.isfile(record):
        raise QuantMimicInputError(
            f"The quantized model fits its stride ({rule}) but {record or 'its weights'} holds no record of "
            "the fitted stride: pass weights of a run trained by train_net.py, whose config.yaml records it."
        )
    run_cfg = add_quantmimic_config(get_cfg())
    run_cfg.set_new_allowed(True)  # a record written by a config with keys of another version
    run_cfg.merge_from_file(record)
    recorded = run_cfg.MODEL.QUANTIZER
    if not (fits_stride(run_cfg) and recorded.STRIDE_CODES == q.STRIDE_CODES
            and recorded.STRIDE_PERCENTILE == q.STRIDE_PERCENTILE):  # fmt: skip
        raise QuantMimicInputError(
            f"{record} was not trained with the stride rule {rule} at percentile {q.STRIDE_PERCENTILE}: "
            "pass the weights of the quantized model trained with this config."
        )
    return float(recorded.STRIDE)


def student_config(cfg: CfgNode) -> CfgNode:
    """The student's standalone config: the main config as a plain GeneralizedRCNN (not frozen)."""
    student_cfg = cfg.clone()
    student_cfg.defrost()
    student_cfg.MODEL.META_ARCHITECTURE = PLAIN_ARCH
    return student_cfg


def deployed_config(cfg: CfgNode) -> CfgNode:
    """The config of the model that runs at test time: a QuantMimicRCNN's student, else ``cfg`` itself."""
    if cfg.MODEL.META_ARCHITECTURE == QUANT_MIMIC_ARCH:
        return student_config(cfg)
    return cfg


def mimic_quantizer(cfg: CfgNode, teacher_cfg: CfgNode | None = None) -> tuple[str, float]:
    """``(type, stride)`` of the mimic loss's quantizer: MODEL.QUANT_MIMIC.QUANTIZER_TYPE / _STRIDE where
    set, else the teacher's in-model MODEL.QUANTIZER.TYPE / STRIDE if the teacher is quantized, else the
    paper's (uniform, 1). ``teacher_cfg``: the teacher's config (default: :func:`load_teacher_config`,
    read only if a key is unset and MODEL.QUANT_MIMIC.TEACHER_CONFIG names one)."""
    qm = cfg.MODEL.QUANT_MIMIC
    kind, stride = qm.QUANTIZER_TYPE, float(qm.QUANTIZER_STRIDE)
    if stride < 0:
        raise QuantMimicInputError(
            f"MODEL.QUANT_MIMIC.QUANTIZER_STRIDE is {stride}: use a positive stride, or 0 for the teacher's."
        )
    if kind and stride:
        return kind, stride
    if teacher_cfg is None and qm.TEACHER_CONFIG:
        teacher_cfg = load_teacher_config(cfg)
    teacher_q = teacher_cfg.MODEL.QUANTIZER if teacher_cfg is not None else None
    if teacher_q is not None and teacher_q.ENABLED:
        default_kind, default_stride = teacher_q.TYPE, float(teacher_q.STRIDE)
    else:
        default_kind, default_stride = DEFAULT_QUANTIZER_TYPE, DEFAULT_QUANTIZER_STRIDE
    return kind or default_kind, stride or default_stride
