"""``add_quantmimic_config(cfg)``: every config key QuantMimic adds to detectron2's, with its meaning."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

from .modeling.backbone.tiny_resnet import add_tiny_resnet_config
from .modeling.backbone.vgg import add_vgg_config
from .modeling.rfcn import add_rfcn_config


def add_quantmimic_config(cfg: CN) -> None:
    """Add QuantMimic's keys to a detectron2 config (in place). Values given are the defaults."""
    # MODEL.RESNETS.WIDTH_DIVISOR: every ResNet (and FPN) channel count is divided by it.
    # 1 = full width (the paper's teacher), 16 = ResNet18-1-16 (the paper's VOC student).
    add_tiny_resnet_config(cfg)
    # MODEL.VGG.{WIDTH_DIVISOR, NORM, OUT_FEATURES}: the VGG-16 backbones (4 = VGG-1-4, the paper's
    # WIDER FACE teacher; 32 = VGG-1-32, its student); see modeling/backbone/vgg.py.
    add_vgg_config(cfg)
    # MODEL.RFCN.{POOL_SIZE, CLS_AGNOSTIC_BBOX_REG, REDUCE_DIM, OHEM, OHEM_BATCH_SIZE_PER_IMAGE}: the
    # R-FCN head (ROI_HEADS.NAME "RFCNROIHeads") of the paper's WIDER FACE detectors; see modeling/rfcn.py.
    # Grayscale input (paper, WIDER FACE) needs no key: INPUT.FORMAT "L" with one-value PIXEL_MEAN/STD.
    add_rfcn_config(cfg)

    # The quantizer inside a model ("quantized ReLU"): replaces the last activation of the feature
    # extractor. Used to fine-tune the quantized teacher (paper Sec. 3.2) and for the paper's
    # "quantization only on the student, no mimic" ablation.
    cfg.MODEL.QUANTIZER = CN()
    # Insert the quantized ReLU after the feature extractor (every FPN output level).
    cfg.MODEL.QUANTIZER.ENABLED = False
    # "uniform": code book {0, s, 2s, ...} (paper); "pow2": {0, s, 2s, 4s, ...} (paper's ablation).
    cfg.MODEL.QUANTIZER.TYPE = "uniform"
    # Quantization stride s. The paper uses 1 for every experiment.
    cfg.MODEL.QUANTIZER.STRIDE = 1.0

    # The Quantization Mimic meta-architecture (MODEL.META_ARCHITECTURE = "QuantMimicRCNN").
    cfg.MODEL.QUANT_MIMIC = CN()
    # Config file of the frozen teacher (a GeneralizedRCNN config of this project). A relative path is
    # resolved against the directory of the config file that names it.
    cfg.MODEL.QUANT_MIMIC.TEACHER_CONFIG = ""
    # Checkpoint of the trained teacher (a detectron2 checkpoint or a QuantMimic export).
    cfg.MODEL.QUANT_MIMIC.TEACHER_WEIGHTS = ""
    # lambda, the weight of the mimic loss. Paper: 1 (VOC sweep 0.1 / 1 / 10, 1 best).
    cfg.MODEL.QUANT_MIMIC.LOSS_WEIGHT = 1.0
    # "per_element": mean over proposals, channels and RoI cells (sum / (2 N C H W)). "as_written":
    # the paper's 1/(2N) sum, which is C*H*W times larger and diverged at once in a prototype here.
    cfg.MODEL.QUANT_MIMIC.NORMALIZE = "per_element"
    # Kernel size of the adaptation conv r() that maps student channels to teacher channels
    # (the paper does not give it): 1 or 3.
    cfg.MODEL.QUANT_MIMIC.ADAPT_KERNEL_SIZE = 1
    # Quantize the teacher's RoI features in the mimic loss (paper: yes).
    cfg.MODEL.QUANT_MIMIC.QUANTIZE_TEACHER = True
    # Quantize the student's adapted RoI features in the mimic loss (paper: yes; gradient is
    # straight-through).
    cfg.MODEL.QUANT_MIMIC.QUANTIZE_STUDENT = True
    # Quantizer of the mimic loss: "uniform" or "pow2", and its stride (paper: uniform, 1).
    cfg.MODEL.QUANT_MIMIC.QUANTIZER_TYPE = "uniform"
    cfg.MODEL.QUANT_MIMIC.QUANTIZER_STRIDE = 1.0
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

    # The deployed form of a detector (quant_mimic.deploy; the other test-time settings are detectron2's
    # MODEL.RPN.*_TEST, MODEL.ROI_HEADS.*_TEST and TEST.DETECTIONS_PER_IMAGE).
    cfg.MODEL.DEPLOY = CN()
    # (box, class) pairs above the score threshold kept per image before the final NMS: a fixed size,
    # so that nothing waits on the device. detectron2 keeps all of them; chosen by measurement (README).
    cfg.MODEL.DEPLOY.CANDIDATES_PER_IMAGE = 1000
