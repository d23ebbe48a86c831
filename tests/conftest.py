"""Shared helpers: run the project's train_net.py in a subprocess on the mini built-in data set."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = REPO / "projects" / "QuantMimic"
TRAIN_NET = PROJECT / "train_net.py"
CONFIGS = PROJECT / "configs"
STUDENT_CONFIG = CONFIGS / "shapes" / "student_R18_16_FPN_scratch.yaml"

# Small, fast runs on the 64-image variant of the built-in data set.
MINI_OPTS = [
    "DATASETS.TRAIN", "('quantmimic_shapes_mini_train',)",
    "DATASETS.TEST", "('quantmimic_shapes_mini_val',)",
    "SOLVER.IMS_PER_BATCH", "4",
    "SOLVER.WARMUP_ITERS", "5",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory) -> Path:
    """A DETECTRON2_DATASETS folder shared by the session's runs (the data set is generated once)."""
    return tmp_path_factory.mktemp("datasets")


def run_train_net(
    args: list[str], datasets_root: Path, timeout: int = 600, warnings: bool = False
) -> subprocess.CompletedProcess:
    """train_net.py in its own process; ``warnings=True`` leaves Python's warnings on, as a user has them."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root), PYTHONWARNINGS="ignore")
    if warnings:
        del env["PYTHONWARNINGS"]
    return subprocess.run(
        [sys.executable, str(TRAIN_NET), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_metrics(output_dir: Path) -> list[dict]:
    with open(output_dir / "metrics.json") as f:
        return [json.loads(line) for line in f if line.strip()]


def copypaste_results(stdout: str) -> dict[str, float]:
    """The last AP row detectron2 prints as ``copypaste: AP,AP50,...`` / ``copypaste: 1.0,2.0,...``
    (the final evaluation of a run that also evaluated on the way)."""
    rows = [line.split("copypaste: ")[1] for line in stdout.splitlines() if "copypaste: " in line]
    header = max(i for i, r in enumerate(rows) if r.startswith("AP,"))
    return dict(zip(rows[header].split(","), map(float, rows[header + 1].split(","))))


@contextlib.contextmanager
def registered_mini_shapes(root: Path, prefix: str):
    """The mini built-in data set generated under ``root`` and registered as ``<prefix>_{train,val}``
    for the duration of the block (in this process only)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from quant_mimic.data import MINI_SPEC, register_shapes_datasets

    names = register_shapes_datasets(root, MINI_SPEC, prefix=prefix)
    try:
        yield names
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
