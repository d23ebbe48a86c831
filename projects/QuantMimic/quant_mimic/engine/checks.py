"""Checks ``train_net.py`` runs in the launching process, before detectron2's ``launch`` starts workers,
for what would otherwise fail inside them: the process count against the batch size, and a
Quantization Mimic run's teacher config and weights (readable, matching its config and classes).

Each problem is a :class:`QuantMimicInputError` with one sentence naming it and the fix.
"""

from __future__ import annotations

import os

import torch
from detectron2.config import CfgNode
from detectron2.modeling import GeneralizedRCNN

from ..config import QUANT_MIMIC_ARCH, load_teacher_config
from ..errors import QuantMimicInputError
from .run_dir import ResumePoint, read_checkpoint
from .teacher import load_teacher_weights


def check_processes(cfg: CfgNode, num_gpus: int, num_machines: int, eval_only: bool) -> None:
    """The worker count must be possible here and divide SOLVER.IMS_PER_BATCH (detectron2 asserts it
    in every worker, after they have started)."""
    if num_gpus < 1 or num_machines < 1:
        raise QuantMimicInputError(
            f"--num-gpus {num_gpus} --num-machines {num_machines}: both must be at least 1 (on a CPU-only "
            "machine --num-gpus N starts N GLOO processes)."
        )
    if torch.cuda.is_available() and num_gpus > torch.cuda.device_count():
        raise QuantMimicInputError(
            f"--num-gpus {num_gpus} asks for more GPUs than this machine has ({torch.cuda.device_count()}): "
            f"pass --num-gpus {torch.cuda.device_count()} or fewer."
        )
    world = num_gpus * num_machines
    batch = cfg.SOLVER.IMS_PER_BATCH
    if not eval_only and (batch < 1 or batch % world):
        multiple = max(world, (max(batch, 1) + world - 1) // world * world)
        raise QuantMimicInputError(
            f"SOLVER.IMS_PER_BATCH {batch} cannot be split evenly over {world} processes (--num-gpus "
            f"{num_gpus} x --num-machines {num_machines}): set SOLVER.IMS_PER_BATCH to a multiple of {world} "
            f"(e.g. {multiple}) or use a --num-gpus that divides {batch}."
        )


def check_teacher(cfg: CfgNode, eval_only: bool) -> None:
    """For a ``QuantMimicRCNN`` config: the teacher config is readable and has the student's classes,
    and (for training) MODEL.QUANT_MIMIC.TEACHER_WEIGHTS is a readable checkpoint whose every key and
    shape matches that config (not the student's own checkpoint, not a QM checkpoint).

    The teacher is built on the CPU here, once, and freed again; an evaluation reads the teacher from
    MODEL.WEIGHTS, so ``eval_only`` checks the config only.
    """
    if cfg.MODEL.META_ARCHITECTURE != QUANT_MIMIC_ARCH:
        return
    teacher_cfg = load_teacher_config(cfg)  # its yaml's own errors are one sentence too
    if eval_only:
        return
    teacher_cfg = teacher_cfg.clone()
    teacher_cfg.defrost()
    teacher_cfg.MODEL.DEVICE = "cpu"
    qm = cfg.MODEL.QUANT_MIMIC
    load_teacher_weights(GeneralizedRCNN(teacher_cfg), qm.TEACHER_WEIGHTS, qm.TEACHER_CONFIG)


def check_weights_readable(path: str, key: str = "MODEL.WEIGHTS") -> None:
    """A local checkpoint file must load (not truncated, not a text file)."""
    if not path or "://" in path or not os.path.isfile(path):
        return  # URLs are the loader's; a missing file is setup.check_weights's
    _, problem = read_checkpoint(path)
    if problem is not None:
        raise QuantMimicInputError(
            f"{key} file {path} {problem}: pass an intact checkpoint (train_net.py writes "
            "OUTPUT_DIR/model_final.pth), or restore the file."
        )


def check_before_launch(
    cfg: CfgNode, num_gpus: int, num_machines: int, eval_only: bool, resume: ResumePoint | None = None
) -> None:
    """The checks of this module (``setup.check_run_inputs`` does config, weights, data and OUTPUT_DIR).
    ``resume``: the checkpoint --resume loads (then MODEL.WEIGHTS is not read)."""
    check_processes(cfg, num_gpus, num_machines, eval_only)
    if resume is None:
        check_weights_readable(cfg.MODEL.WEIGHTS)
    check_teacher(cfg, eval_only)
