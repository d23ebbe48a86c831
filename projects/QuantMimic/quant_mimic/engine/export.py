"""Student-only export: a checkpoint and config that plain detectron2 tools load without the teacher."""

from __future__ import annotations

import os

import torch
from detectron2.config import CfgNode
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..config import student_config
from ..modeling.meta_arch import QuantMimicRCNN

STUDENT_WEIGHTS = "student_final.pth"
STUDENT_CONFIG = "student_config.yaml"


def export_student(model: QuantMimicRCNN, cfg: CfgNode, output_dir: str) -> tuple[str, str]:
    """Write ``student_final.pth`` ({"model": student state dict}) and ``student_config.yaml``
    (a GeneralizedRCNN config whose MODEL.WEIGHTS is that file). Returns both paths."""
    os.makedirs(output_dir, exist_ok=True)
    weights = os.path.join(output_dir, STUDENT_WEIGHTS)
    config = os.path.join(output_dir, STUDENT_CONFIG)
    state = {k: v.detach().cpu() for k, v in model.student_state_dict().items()}
    torch.save({"model": state, "__author__": "QuantMimic student export"}, weights + ".tmp")
    os.replace(weights + ".tmp", weights)
    student_cfg = student_config(cfg)
    student_cfg.MODEL.WEIGHTS = weights
    with open(config + ".tmp", "w") as f:
        f.write(student_cfg.dump())
    os.replace(config + ".tmp", config)
    return weights, config


class StudentExportHook(HookBase):
    """After training, write the student-only checkpoint next to the normal ones (main process only)."""

    def __init__(self, cfg: CfgNode):
        self.cfg = cfg

    def after_train(self) -> None:
        if not comm.is_main_process() or self.trainer.iter < self.trainer.max_iter:
            return  # training stopped early (an error): keep whatever export is already there
        export_student(self.trainer.bare_model, self.cfg, self.cfg.OUTPUT_DIR)
