"""QuantMimic evaluation: the official WIDER FACE protocol as a detectron2 evaluator (and its prediction
files read back), and Pascal VOC with the AP50 of every class."""

from .pascal_voc import PascalVOCPerClassEvaluator, evaluate_voc_detection_files, format_per_class_table
from .wider_face import (
    WIDER_SETTINGS,
    WiderFaceEvaluator,
    WiderFaceGroundTruth,
    evaluate_wider_face,
    load_wider_face_gt,
)
from .wider_face_files import WiderFacePredictions, read_wider_face_predictions

__all__ = [
    "WIDER_SETTINGS",
    "PascalVOCPerClassEvaluator",
    "WiderFaceEvaluator",
    "WiderFaceGroundTruth",
    "WiderFacePredictions",
    "evaluate_voc_detection_files",
    "evaluate_wider_face",
    "format_per_class_table",
    "load_wider_face_gt",
    "read_wider_face_predictions",
]
