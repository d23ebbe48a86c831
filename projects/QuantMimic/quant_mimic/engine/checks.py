"""Every check ``train_net.py`` runs before it launches, in the launching process, before any worker
starts: :func:`check_run` is the one entry point and decides what is checked (the config itself is built
by :func:`quant_mimic.config.build_config`; a ``--dataset`` data set's files are checked by
:func:`quant_mimic.data.user.check_user_dataset`).

Every problem found here becomes a :class:`QuantMimicInputError` whose message is one sentence that
names the problem and the fix; ``train_net.py`` prints it and exits with status 2.
"""

from __future__ import annotations

import argparse
import os

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import GeneralizedRCNN

from ..data.user import check_user_dataset, user_dataset
from ..errors import QuantMimicInputError
from .run_dir import LAST_CHECKPOINT, last_checkpoint_name, read_checkpoint
from .teacher import load_teacher_weights

# Metadata fields that name files or folders a registered data set reads.
_DATASET_PATH_FIELDS = ("dirname", "image_root", "json_file", "annotation_file", "gt_dir")


def check_run(cfg: CfgNode, args: argparse.Namespace, teacher_cfg: CfgNode | None = None) -> list[str]:
    """All checks a ``train_net.py`` run needs before it starts workers, cheapest first: MODEL.WEIGHTS,
    OUTPUT_DIR, the data sets, the process count, then a Quantization Mimic run's teacher.

    ``args``: train_net.py's options (``resume``, ``eval_only``, ``num_gpus``, ``num_machines``) and
    ``resume_point``, the checkpoint --resume loads (then MODEL.WEIGHTS must exist but is not read);
    ``teacher_cfg``: a QuantMimicRCNN run's teacher config as train_net.py read it (else None).
    Returns the sentences to log (what the checks of ``--dataset`` data sets covered)."""
    check_weights(cfg.MODEL.WEIGHTS, read=args.resume_point is None)
    check_output_dir(cfg, args.resume, args.eval_only)
    notes = check_datasets(cfg, args.eval_only)
    check_processes(cfg, args.num_gpus, args.num_machines, args.eval_only)
    check_teacher(cfg, teacher_cfg, args.eval_only)
    return notes


def check_weights(path: str, key: str = "MODEL.WEIGHTS", *, read: bool = False) -> None:
    """A local checkpoint path must exist and, with ``read``, load (not truncated, not a text file).
    URLs and ``detectron2://`` names are left to the loader."""
    if not path or "://" in path:
        return
    if not os.path.isfile(path):
        raise QuantMimicInputError(
            f"{key} file {path} does not exist: train that model first (train_net.py writes "
            "OUTPUT_DIR/model_final.pth) or fix the path."
        )
    _, problem = read_checkpoint(path) if read else (None, None)
    if problem is not None:
        raise QuantMimicInputError(
            f"{key} file {path} {problem}: pass an intact checkpoint (train_net.py writes "
            "OUTPUT_DIR/model_final.pth), or restore the file."
        )


def check_output_dir(cfg: CfgNode, resume: bool, eval_only: bool) -> None:
    """A new training run must not overwrite the checkpoints and metrics of an earlier one."""
    if not resume and not eval_only and os.path.exists(os.path.join(cfg.OUTPUT_DIR, LAST_CHECKPOINT)):
        raise QuantMimicInputError(
            f"OUTPUT_DIR {cfg.OUTPUT_DIR} already holds a training run (last checkpoint "
            f"{last_checkpoint_name(cfg.OUTPUT_DIR)}): pass --resume to continue it, or set OUTPUT_DIR to "
            "a new folder."
        )


def check_datasets(cfg: CfgNode, eval_only: bool) -> list[str]:
    """Each data set the run trains on (DATASETS.TRAIN, unless ``eval_only``) and evaluates on
    (DATASETS.TEST) must be registered and its folders present (generated ones are generated now); then
    a ``--dataset`` one is checked whole (json, images, boxes). Returns the sentences to log."""
    train = [] if eval_only else list(cfg.DATASETS.TRAIN)
    test = list(cfg.DATASETS.TEST)
    names = list(dict.fromkeys(train + test))
    registered = DatasetCatalog.list()
    for name in names:
        if name not in registered:
            ours = sorted(n for n in registered if n.startswith("quantmimic_"))
            raise QuantMimicInputError(
                f"Dataset '{name}' is not registered: use a registered one in DATASETS.TRAIN / DATASETS.TEST "
                f"(built in: {', '.join(ours)}; detectron2's own, e.g. voc_2007_trainval) or register it first."
            )
        meta = MetadataCatalog.get(name)
        if meta.get("generated", False):
            DatasetCatalog.get(name)  # the built-in data set is written on first use
            continue
        for field in _DATASET_PATH_FIELDS:
            path = meta.get(field, None)
            if path and not os.path.exists(path):
                raise QuantMimicInputError(
                    f"Dataset '{name}' needs {path}, which is not there: put the data set there as "
                    "datasets/README.md describes, or set DETECTRON2_DATASETS to the folder that holds it."
                )
    return [
        check_user_dataset(name, for_training=name in train, for_evaluation=name in test)
        for name in names
        if user_dataset(name) is not None
    ]


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


def check_teacher(cfg: CfgNode, teacher_cfg: CfgNode | None, eval_only: bool) -> None:
    """For the training of a ``QuantMimicRCNN``: MODEL.QUANT_MIMIC.TEACHER_WEIGHTS is a readable
    checkpoint whose every key and shape matches the teacher config ``teacher_cfg`` (not the student's
    own checkpoint, not a QM checkpoint). ``teacher_cfg``: None for other configs; reading it checked
    the yaml and the student's classes.

    The teacher is built on the CPU here, once, and freed again; an evaluation reads the teacher from
    MODEL.WEIGHTS, so ``eval_only`` checks nothing here.
    """
    if teacher_cfg is None or eval_only:
        return
    teacher_cfg = teacher_cfg.clone()
    teacher_cfg.defrost()
    teacher_cfg.MODEL.DEVICE = "cpu"
    qm = cfg.MODEL.QUANT_MIMIC
    load_teacher_weights(GeneralizedRCNN(teacher_cfg), qm.TEACHER_WEIGHTS, qm.TEACHER_CONFIG)
