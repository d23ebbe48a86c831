"""QuantMimic evaluation: the official WIDER FACE protocol as a detectron2 evaluator."""

from .wider_face import (
    WIDER_SETTINGS,
    WiderFaceEvaluator,
    WiderFaceGroundTruth,
    evaluate_wider_face,
    load_wider_face_gt,
)

__all__ = [
    "WIDER_SETTINGS",
    "WiderFaceEvaluator",
    "WiderFaceGroundTruth",
    "evaluate_wider_face",
    "load_wider_face_gt",
]
