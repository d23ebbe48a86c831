#!/usr/bin/env python
"""Train or evaluate a QuantMimic model (teacher, student, or Quantization Mimic).

    python projects/QuantMimic/train_net.py --config-file projects/QuantMimic/configs/shapes/teacher_R18_FPN.yaml
    python projects/QuantMimic/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python projects/QuantMimic/train_net.py --config-file ... --num-gpus 2 SOLVER.IMS_PER_BATCH 8
    python projects/QuantMimic/train_net.py --config-file ... --dataset mytrain=coco:train.json:images/ \
        --dataset myval=voc:VOCdevkit/VOC2007:test DATASETS.TRAIN "('mytrain',)" DATASETS.TEST "('myval',)"

The mimic loss is computed by the model itself (QuantMimicRCNN.forward: quant_mimic/modeling/meta_arch.py).

Bad input (config, weights, data, checkpoints) ends as one line ``train_net.py: error: <sentence>`` on
stderr and exit status 2, whether it is found before the workers start or inside one.
``--dataset NAME=coco:JSON[:IMAGES]`` / ``NAME=voc:DIR:SPLIT[:CLASSES]`` (repeatable, before the overrides)
registers a data set of your own (quant_mimic/data/user.py, datasets/README.md); MODEL.ROI_HEADS.NUM_CLASSES
follows its classes unless the overrides set it, and it is checked (json, images, boxes) before training.
``--eval-only`` with an OUTPUT_DIR that holds a training run writes to ``<OUTPUT_DIR>/eval/<weights
file stem>/`` instead, so the run's own files are never replaced.

One run per folder: the run holds ``<OUTPUT_DIR>/.lock`` (quant_mimic/engine/run_lock.py) for its whole
life, and a second run on the folder ends in one sentence naming the first one's pid and start time.
Checkpoints, ``last_checkpoint`` and ``metrics.json`` lines are written whole
(quant_mimic/engine/trusted_writes.py); a full disk or an unwritable folder ends in one sentence, exit 2,
and ``--resume`` continues from the last complete checkpoint. Ctrl-C prints the iteration reached and
that checkpoint, exit 130.
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
# A log line that cannot be written (a full disk) is dropped, not reported with a traceback: the run
# ends with one sentence about the disk.
logging.raiseExceptions = False

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import CfgNode  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import quant_mimic  # noqa: E402, F401  (registers the project's models, backbones and data sets)
from quant_mimic.atomic import find_write_error, write_failure  # noqa: E402
from quant_mimic.config import QUANT_MIMIC_ARCH, build_config, load_teacher_config  # noqa: E402
from quant_mimic.data import default_datasets_root, register_checked_voc  # noqa: E402
from quant_mimic.data.user import (  # noqa: E402
    add_dataset_argument,
    configure_classes,
    misplaced_dataset_option,
    register_user_datasets,
)
from quant_mimic.engine import Trainer, check_run  # noqa: E402
from quant_mimic.engine.run_dir import eval_output_dir, last_checkpoint_name, resume_point  # noqa: E402
from quant_mimic.engine.run_lock import run_lock  # noqa: E402
from quant_mimic.engine.stride_fit import resolve_stride  # noqa: E402
from quant_mimic.engine.trusted_writes import resume_advice  # noqa: E402
from quant_mimic.errors import QuantMimicInputError, one_line  # noqa: E402
from quant_mimic_tools.cli import run as run_command  # noqa: E402

PROG = "train_net.py"
# Set by launch_run() for spawned workers: the file a worker writes its QuantMimicInputError sentence to.
ERROR_FILE_ENV = "QUANTMIMIC_ERROR_FILE"

logger = logging.getLogger("quant_mimic.train_net")


# The exit status of a run stopped by Ctrl-C (128 + SIGINT), as a shell reports it.
INTERRUPTED_STATUS = 130


def fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, at ``iteration``."""

    def __init__(self, iteration: int):
        super().__init__(iteration)
        self.iteration = iteration


def interrupted(run_dir: str, iteration: int | None = None, quiet: bool = False) -> None:
    """Exit 130 after Ctrl-C, with one line naming the iteration reached and the checkpoint ``--resume``
    continues from (``quiet``: no line, for the workers of a multi-process run)."""
    if not quiet:
        where = f" at iteration {iteration}" if iteration is not None else ""
        name = last_checkpoint_name(run_dir)
        if name:
            then = f"--resume continues from {os.path.join(os.path.abspath(run_dir), name)}"
        else:
            then = "no checkpoint was written yet: run again without --resume"
        print(f"{PROG}: interrupted{where}; {then}.", file=sys.stderr, flush=True)
    sys.exit(INTERRUPTED_STATUS)


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
    stride_note = resolve_stride(cfg, resume=args.resume, fit=not args.eval_only)
    cfg.freeze()
    default_setup(cfg, args)
    # the project's own loggers (quant_mimic.*) into the same console and OUTPUT_DIR/log.txt
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="quant_mimic")
    for note in [*args.class_notes, *getattr(args, "data_notes", []), *filter(None, [stride_note])]:
        logger.info(note)
    if cfg.OUTPUT_DIR != args.run_dir:
        logger.info(f"{args.run_dir} holds a training run: this evaluation writes to {cfg.OUTPUT_DIR}.")
    return cfg


def run(args, teacher_cfg: CfgNode | None = None):
    """Train or evaluate; ``teacher_cfg``: a QuantMimicRCNN's teacher config as the launching process
    read it (None: read from the config)."""
    cfg = setup(args)
    point = args.resume_point
    if point is not None and point.warning:
        logger.warning(point.warning)
    if args.eval_only:
        model = Trainer.build_model(cfg, teacher_cfg)
        checkpointer = DetectionCheckpointer(model, save_dir=args.run_dir)
        if point is not None:
            checkpointer.load(point.path)
        else:
            checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg, teacher_cfg)
    if point is not None and point.warning:
        trainer.resume_from(point.path)
    else:
        trainer.resume_or_load(resume=args.resume)
    try:
        return trainer.train()
    except KeyboardInterrupt:
        raise TrainingInterrupted(trainer.iter) from None


def main(args, teacher_cfg: CfgNode | None = None):
    """One process's run (``teacher_cfg``: see :func:`run`). A QuantMimicInputError (in this process or
    a DataLoader worker) or a write that fails for want of space or permission ends it with exit status
    2: printed as one line, or, in a spawned worker, written for the launching process. Ctrl-C ends it
    with exit status 130."""
    try:
        result = run(args, teacher_cfg)
    except QuantMimicInputError as e:
        message = one_line(e)
    except KeyboardInterrupt as e:
        interrupted(args.run_dir, getattr(e, "iteration", None), quiet=comm.get_world_size() > 1)
    except Exception as e:
        masked = masked_input_error(e)
        failed = find_write_error(e)
        if masked is not None:
            message = one_line(masked)
        elif failed is not None:
            path = failed.filename or args.run_dir
            message = one_line(write_failure(path, failed, resume_advice(args.run_dir)))
        else:
            raise
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


def masked_input_error(error: BaseException) -> QuantMimicInputError | None:
    """The QuantMimicInputError that ``error`` was raised while handling, if any: detectron2 runs the
    hooks' ``after_train`` in a ``finally``, and one of them can fail on the state a failed step left
    (the metric printer divides by zero after a failed write), hiding the sentence that says why."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, QuantMimicInputError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _sentence_instead_of_traceback(record: logging.LogRecord) -> bool:
    """detectron2 logs "Exception during training:" with the traceback; for a QuantMimicInputError the
    sentence is the whole story (and it ends the run as one line on stderr)."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, QuantMimicInputError):
        record.msg, record.args = f"{record.getMessage()} {one_line(error)}", ()
        record.exc_info = record.exc_text = None
    return True


logging.getLogger("detectron2.engine.train_loop").addFilter(_sentence_instead_of_traceback)


def close_process_group() -> None:
    """After a multi-process run, wait for every process and close the process group before exit: a gloo
    group left to the interpreter's shutdown can abort one process ("terminate called without an active
    exception") while the others are still tearing down, which turned a finished run into a failed one."""
    if comm.get_world_size() > 1:
        comm.synchronize()
        dist.destroy_process_group()


def get_parser():
    """detectron2's options (MODEL.WEIGHTS and the other config overrides trailing, as detectron2 takes
    them) and ``--dataset``; ``--help`` prints this module's docstring and the defaults."""
    from quant_mimic_tools.cli import HelpFormatter

    parser = add_dataset_argument(default_argument_parser())
    parser.prog, parser.description, parser.formatter_class = "train_net.py", __doc__, HelpFormatter
    return parser


def cli(argv: list[str] | None = None) -> None:
    """The command: a QuantMimicInputError here (checks, the folder's lock) or in a worker ends as one line
    ``train_net.py: error: ...``, exit 2 (quant_mimic_tools.cli.run)."""
    run_command(PROG, get_parser(), launch_run, argv)


def launch_run(args) -> None:
    """Check the inputs once, before any worker starts, so that a mistake reads as one sentence; then run
    ``main`` in every process, holding the folder's lock. Raises QuantMimicInputError."""
    cfg = prepare(args)
    # a QuantMimicRCNN's teacher config: read once, here, and passed on to the workers
    is_qm = cfg.MODEL.META_ARCHITECTURE == QUANT_MIMIC_ARCH
    teacher_cfg = load_teacher_config(cfg) if is_qm else None
    args.data_notes = check_run(cfg, args, teacher_cfg)  # what the --dataset checks covered
    error_dir = tempfile.mkdtemp(prefix="quantmimic-errors-")
    os.environ[ERROR_FILE_ENV] = os.path.join(error_dir, "error.txt")
    try:
        with run_lock(cfg.OUTPUT_DIR):  # before anything is written into the folder, held to the end
            launch(
                main,
                args.num_gpus,
                num_machines=args.num_machines,
                machine_rank=args.machine_rank,
                dist_url=args.dist_url,
                args=(args, teacher_cfg),
            )
    except KeyboardInterrupt:  # the launching process of a multi-process run
        interrupted(args.run_dir)
    except mp.ProcessExitedException as e:
        if e.exit_code == INTERRUPTED_STATUS:
            interrupted(args.run_dir)
        if not os.path.isfile(os.environ[ERROR_FILE_ENV]):
            raise  # a worker died without an input error: keep PyTorch's report
        with open(os.environ[ERROR_FILE_ENV]) as f:
            raise QuantMimicInputError(f.read()) from None
    finally:
        shutil.rmtree(error_dir, ignore_errors=True)


if __name__ == "__main__":
    cli()
