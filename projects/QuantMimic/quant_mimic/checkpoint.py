"""Loading a detector's weights from any checkpoint of this project."""

from __future__ import annotations

from detectron2.checkpoint import DetectionCheckpointer

STUDENT_PREFIX = "student."


class StudentCheckpointer(DetectionCheckpointer):
    """A DetectionCheckpointer that loads a QuantMimicRCNN checkpoint's student into a plain detector
    (keys ``student.*``, prefix removed; the teacher's and the adapter's are dropped). Other checkpoints
    load as with DetectionCheckpointer."""

    def _load_model(self, checkpoint: dict):
        state = checkpoint.get("model", {})
        if any(k.startswith(STUDENT_PREFIX) for k in state):
            checkpoint["model"] = {
                k[len(STUDENT_PREFIX) :]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)
            }
        return super()._load_model(checkpoint)
