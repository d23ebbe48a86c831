"""Config building and input checks run once, in the launching process, before any worker starts.

Every problem found here becomes a :class:`QuantMimicInputError` whose message is one sentence that
names the problem and the fix; ``train_net.py`` prints it and exits with status 2.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import torch
import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import add_quantmimic_config
from ..errors import QuantMimicInputError

# Metadata fields that name files or folders a registered data set reads.
_DATASET_PATH_FIELDS = ("dirname", "image_root", "json_file", "annotation_file", "gt_dir")


def build_config(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """detectron2 config + QuantMimic keys, merged with ``config_file`` and ``opts`` (not frozen)."""
    cfg = get_cfg()
    add_quantmimic_config(cfg)
    if not config_file:
        raise QuantMimicInputError("No --config-file given: pass one of projects/QuantMimic/configs/*.yaml.")
    if not os.path.isfile(config_file):
        raise QuantMimicInputError(
            f"Config file {config_file} does not exist: pass one of projects/QuantMimic/configs/*.yaml."
        )
    for source, merge, arg in [
        (config_file, cfg.merge_from_file, config_file),
        ("the command-line overrides", cfg.merge_from_list, list(opts)),
    ]:
        try:
            merge(arg)
        except yaml.YAMLError as e:
            raise QuantMimicInputError(yaml_error_sentence(e, config_file)) from None
        except OSError as e:  # the file itself, or a _BASE_ file it names, cannot be read
            if e.filename and os.path.abspath(str(e.filename)) == os.path.abspath(config_file):
                raise QuantMimicInputError(
                    f"Config file {config_file} cannot be read ({e.strerror or e}): fix its permissions."
                ) from None
            raise QuantMimicInputError(
                f"{source} names {e.filename or 'a file'} (as _BASE_), which cannot be read "
                f"({e.strerror or e}): fix the _BASE_ path."
            ) from None
        except (KeyError, AssertionError, ValueError) as e:
            msg = str(e.args[0] if e.args else e).strip("'\"")
            raise QuantMimicInputError(
                f"{source}: {msg}; check the key's spelling and value type against detectron2's defaults "
                "and projects/QuantMimic/quant_mimic/config.py."
            ) from None
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).info("No CUDA device: running on the CPU (MODEL.DEVICE cpu).")
        cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.QUANT_MIMIC.TEACHER_CONFIG = resolve_config_path(
        cfg.MODEL.QUANT_MIMIC.TEACHER_CONFIG, config_file
    )
    return cfg


def yaml_error_sentence(error: yaml.YAMLError, config_file: str, what: str = "Config file") -> str:
    """One sentence for a YAML syntax error: the file (a ``_BASE_`` one if the error is there), the line
    and column where the broken construct starts, and what the parser expected where."""

    def at(mark) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    problem_mark = getattr(error, "problem_mark", None)
    context_mark = getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    mark = context_mark or problem_mark
    where = config_file
    if mark is not None:
        name = mark.name if mark.name and not mark.name.startswith("<") else config_file
        where = f"{name} {at(mark)}"
    detail = f"{context}: {problem}" if context else problem
    if problem_mark is not None and mark is not problem_mark:
        detail += f" at {at(problem_mark)}"
    return (
        f"{what} {where} is not valid YAML ({' '.join(detail.split())}): fix the syntax there "
        "(indentation, a missing ':' or closing bracket, a tab)."
    )


def resolve_config_path(path: str, config_file: str) -> str:
    """A config path named inside ``config_file``: as given if it exists, else relative to the folder
    of ``config_file`` or of one of its parents (so ``_BASE_`` chains across folders keep working)."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    folder = os.path.dirname(os.path.abspath(config_file))
    while True:
        candidate = os.path.join(folder, path)
        if os.path.exists(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return path  # not found: load_teacher_config reports it
        folder = parent


def check_weights(path: str, key: str = "MODEL.WEIGHTS") -> None:
    """A local checkpoint path must exist (URLs and ``detectron2://`` names are left to the loader)."""
    if path and "://" not in path and not os.path.isfile(path):
        raise QuantMimicInputError(
            f"{key} file {path} does not exist: train that model first (train_net.py writes "
            "OUTPUT_DIR/model_final.pth) or fix the path."
        )


def check_datasets(names: Sequence[str]) -> None:
    """Each data set must be registered and its folders present; generated ones are generated now."""
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


def check_output_dir(cfg: CfgNode, resume: bool, eval_only: bool) -> None:
    """A new training run must not overwrite the checkpoints and metrics of an earlier one."""
    last = os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")
    if not resume and not eval_only and os.path.exists(last):
        with open(last) as f:
            name = f.read().strip()
        raise QuantMimicInputError(
            f"OUTPUT_DIR {cfg.OUTPUT_DIR} already holds a training run (last checkpoint {name}): pass "
            "--resume to continue it, or set OUTPUT_DIR to a new folder."
        )


def check_run_inputs(cfg: CfgNode, resume: bool = False, eval_only: bool = False) -> None:
    """All checks a ``train_net.py`` run needs before it starts workers."""
    check_weights(cfg.MODEL.WEIGHTS)
    check_output_dir(cfg, resume, eval_only)
    check_datasets(
        list(cfg.DATASETS.TEST) if eval_only else list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    )
