"""Input checks run once, in the launching process, before any worker starts (the config itself is
built by :func:`quant_mimic.config.build_config`).

Every problem found here becomes a :class:`QuantMimicInputError` whose message is one sentence that
names the problem and the fix; ``train_net.py`` prints it and exits with status 2.
"""

from __future__ import annotations

import os
from typing import Sequence

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import QuantMimicInputError

# Metadata fields that name files or folders a registered data set reads.
_DATASET_PATH_FIELDS = ("dirname", "image_root", "json_file", "annotation_file", "gt_dir")


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
