"""What a checkpoint of this project holds, and loading a detector's weights from any of them.

A ``QuantMimicRCNN`` checkpoint's model state holds the student's keys under :data:`STUDENT_PREFIX`, the
frozen teacher's under :data:`TEACHER_PREFIX` (the model's attribute names) and the adapter's under
``adapter.``; a student export (``student_final.pth``) and a teacher's checkpoint are plain detectron2
ones. This module is the one place that knows these prefixes.
"""

from __future__ import annotations

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn

STUDENT_PREFIX = "student."
TEACHER_PREFIX = "teacher."


def is_quant_mimic_state(state: dict) -> bool:
    """Whether a model state dict is a whole QuantMimicRCNN's (student and teacher keys)."""
    return any(k.startswith(STUDENT_PREFIX) for k in state) and any(
        k.startswith(TEACHER_PREFIX) for k in state
    )


def student_state(state: dict) -> dict:
    """The student's weights in a model state dict, loadable into a plain detector: the ``student.*``
    keys with the prefix removed where there are any (a QuantMimicRCNN's), else ``state`` itself."""
    if not any(k.startswith(STUDENT_PREFIX) for k in state):
        return state
    return {k[len(STUDENT_PREFIX) :]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}


class StudentCheckpointer(DetectionCheckpointer):
    """A DetectionCheckpointer that loads a QuantMimicRCNN checkpoint's student into a plain detector
    (:func:`student_state`: the teacher's and the adapter's weights are dropped). Other checkpoints load
    as with DetectionCheckpointer."""

    def _load_model(self, checkpoint: dict):
        if "model" in checkpoint:
            checkpoint["model"] = student_state(checkpoint["model"])
        return super()._load_model(checkpoint)


def trained_model(cfg: CfgNode) -> nn.Module:
    """The model of ``cfg`` (``build_model``) in eval mode, with MODEL.WEIGHTS loaded by
    :class:`StudentCheckpointer` (a QM checkpoint's student too)."""
    model = build_model(cfg)
    StudentCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model.eval()
