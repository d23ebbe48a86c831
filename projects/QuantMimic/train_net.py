#!/usr/bin/env python
"""Train or evaluate a QuantMimic model (teacher, student, or Quantization Mimic).

    python projects/QuantMimic/train_net.py --config-file projects/QuantMimic/configs/shapes/teacher_R18_FPN.yaml
    python projects/QuantMimic/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python projects/QuantMimic/train_net.py --config-file ... --num-gpus 2 SOLVER.IMS_PER_BATCH 8
    python projects/QuantMimic/train_net.py --config-file ... --dataset mytrain=coco:train.json:images/ \
        --dataset myval=voc:VOCdevkit/VOC2007:test DATASETS.TRAIN "('mytrain',)" DATASETS.TEST "('myval',)"

The mimic loss is added by the trainer's step: quant_mimic/engine/trainer.py.

Bad input (config, weights, data, checkpoints) ends as one line ``train_net.py: error: <sentence>`` on
stderr and exit status 2, whether it is found before the workers start or inside one.
``--dataset NAME=coco:JSON[:IMAGES]`` / ``NAME=voc:DIR:SPLIT[:CLASSES]`` (repeatable, before the overrides)
registers a data set of your own (quant_mimic/data/user.py, datasets/README.md); MODEL.ROI_HEADS.NUM_CLASSES
follows its classes unless the overrides set it, and it is checked (json, images, boxes) before training.
``--eval-only`` with an OUTPUT_DIR that holds a training run writes to ``<OUTPUT_DIR>/eval/<weights
file stem>/`` instead, so the run's own files are never replaced.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import warnings

# Noise on stderr that the user cannot act on, which would bury the one-line errors: torch's deprecation
# notices about what detectron2 calls (torch.jit.script at import, TypedStorage, broadcast_buffers,
# meshgrid), torch saying that a CPU-only machine has no CUDA runtime (detectron2's environment report),
# and, when one worker stops on an error, that it terminates the others.
for _category in (DeprecationWarning, FutureWarning, UserWarning):
    warnings.filterwarnings("ignore", message=r".*(deprecat|in an upcoming release)", category=_category)
for _name, _start in [
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),
    ("torch.multiprocessing.spawn", "Terminating process"),
]:
    logging.getLogger(_name).addFilter(lambda record, s=_start: not record.getMessage().startswith(s))

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import CfgNode  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import quant_mimic  # noqa: E402, F401  (registers the project's models, backbones and data sets)
from quant_mimic.config import build_config  # noqa: E402
from quant_mimic.data import default_datasets_root, register_checked_voc  # noqa: E402
from quant_mimic.data.user import (  # noqa: E402
    add_dataset_argument,
    check_user_datasets,
    configure_classes,
    misplaced_dataset_option,
    register_user_datasets,
)
from quant_mimic.engine import Trainer, check_run_inputs  # noqa: E402
from quant_mimic.engine.checks import check_before_launch  # noqa: E402
from quant_mimic.engine.run_dir import eval_output_dir, resume_point  # noqa: E402
from quant_mimic.errors import QuantMimicInputError, one_line  # noqa: E402

PROG = "train_net.py"
# Set by cli() for spawned workers: the file a worker writes its QuantMimicInputError sentence to.
ERROR_FILE_ENV = "QUANTMIMIC_ERROR_FILE"

logger = logging.getLogger("quant_mimic.train_net")


def fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


def prepare(args) -> CfgNode:
    """The run's config, with what ``args`` needs recorded on it: ``args.resume_point`` (the checkpoint
    --resume loads, or None) and ``args.run_dir`` (the config's OUTPUT_DIR). For --eval-only the
    config's OUTPUT_DIR becomes :func:`eval_output_dir`. Deterministic: the launching process and the
    workers compute the same. ``--dataset`` data sets are registered first (in every process), and
    ``args.class_notes`` says what their classes set."""
    misplaced_dataset_option(args.opts)
    # detectron2's voc_* names read every XML file with the checked loader (one sentence per bad file)
    register_checked_voc(default_datasets_root())
    datasets = register_user_datasets(getattr(args, "dataset", []))
    cfg = build_config(args.config_file, args.opts)
    args.class_notes = configure_classes(cfg, args.opts, datasets)
    args.run_dir = cfg.OUTPUT_DIR
    if not hasattr(args, "resume_point"):  # workers get the launching process's answer
        args.resume_point = resume_point(cfg.OUTPUT_DIR) if args.resume and cfg.OUTPUT_DIR else None
    if args.eval_only:
        weights = args.resume_point.path if args.resume_point else cfg.MODEL.WEIGHTS
        cfg.OUTPUT_DIR = eval_output_dir(cfg.OUTPUT_DIR, weights)
    return cfg


def setup(args) -> CfgNode:
    cfg = prepare(args)
    cfg.freeze()
    default_setup(cfg, args)
    # the project's own loggers (quant_mimic.*) into the same console and OUTPUT_DIR/log.txt
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="quant_mimic")
    for note in [*args.class_notes, *getattr(args, "data_notes", [])]:
        logger.info(note)
    if cfg.OUTPUT_DIR != args.run_dir:
        logger.info(f"{args.run_dir} holds a training run: this evaluation writes to {cfg.OUTPUT_DIR}.")
    return cfg


def run(args):
    cfg = setup(args)
    point = args.resume_point
    if point is not None and point.warning:
        logger.warning(point.warning)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = DetectionCheckpointer(model, save_dir=args.run_dir)
        if point is not None:
            checkpointer.load(point.path)
        else:
            checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    if point is not None and point.warning:
        trainer.resume_from(point.path)
    else:
        trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def main(args):
    """One process's run. A QuantMimicInputError (in this process or a DataLoader worker) ends it with
    exit status 2: printed as one line, or, in a spawned worker, written for the launching process."""
    try:
        result = run(args)
    except QuantMimicInputError as e:
        message = one_line(e)
    else:
        close_process_group()
        return result
    error_file = os.environ.get(ERROR_FILE_ENV)
    if error_file and comm.get_world_size() > 1:
        try:
            with open(error_file, "x") as f:  # the first worker's sentence wins
                f.write(message)
        except FileExistsError:
            pass
        sys.exit(2)
    fail(message)


def close_process_group() -> None:
    """After a multi-process run, wait for every process and close the process group before exit: a gloo
    group left to the interpreter's shutdown can abort one process ("terminate called without an active
    exception") while the others are still tearing down, which turned a finished run into a failed one."""
    if comm.get_world_size() > 1:
        comm.synchronize()
        dist.destroy_process_group()


def cli(argv: list[str] | None = None) -> None:
    args = add_dataset_argument(default_argument_parser()).parse_args(argv)
    try:  # check the inputs once, before any worker starts, so a mistake reads as one sentence
        cfg = prepare(args)
        check_run_inputs(cfg, args.resume, args.eval_only)
        args.data_notes = check_user_datasets(cfg, args.eval_only)  # json, images, boxes of --dataset
        check_before_launch(cfg, args.num_gpus, args.num_machines, args.eval_only, args.resume_point)
    except QuantMimicInputError as e:
        fail(one_line(e))
    error_dir = tempfile.mkdtemp(prefix="quantmimic-errors-")
    os.environ[ERROR_FILE_ENV] = os.path.join(error_dir, "error.txt")
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except mp.ProcessExitedException:
        if not os.path.isfile(os.environ[ERROR_FILE_ENV]):
            raise  # a worker died without an input error: keep PyTorch's report
        with open(os.environ[ERROR_FILE_ENV]) as f:
            fail(f.read())
    finally:
        shutil.rmtree(error_dir, ignore_errors=True)


if __name__ == "__main__":
    cli()
