"""A finished training run as the report sees it: its folder, config and the checkpoint to load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from detectron2.config import CfgNode

from quant_mimic.config import build_config
from quant_mimic.engine.export import STUDENT_CONFIG, STUDENT_WEIGHTS

from ..results import read_final_metrics, read_metrics


@dataclass
class Run:
    """One row of the report.

    name: short label (e.g. ``student_qm_seed0``); description: one line for humans;
    config: the project config that produced it (relative to ``configs/``); output_dir: its OUTPUT_DIR.
    """

    name: str
    description: str
    config: str
    output_dir: Path

    @property
    def is_mimic(self) -> bool:
        """A QuantMimicRCNN run (its student is exported on its own)."""
        return (self.output_dir / STUDENT_CONFIG).is_file()

    @property
    def checkpoint(self) -> Path:
        """What a user loads to detect: the student export for mimic runs, else model_final.pth."""
        return self.output_dir / (STUDENT_WEIGHTS if self.is_mimic else "model_final.pth")

    def metrics(self) -> list[dict]:
        """Every row of the run's metrics.json (training rows and evaluations)."""
        return read_metrics(self.output_dir)

    def final_evaluation(self) -> dict:
        """The last ``bbox/*`` row of metrics.json (empty if the run has not finished)."""
        return read_final_metrics(self.output_dir) or {}

    def detector_config(self, device: str | None = None) -> CfgNode:
        """The config of the detector a user runs (the student alone for mimic runs), weights set."""
        name = STUDENT_CONFIG if self.is_mimic else "config.yaml"
        cfg = load_config(self.output_dir / name, device)
        cfg.MODEL.WEIGHTS = str(self.checkpoint)
        cfg.freeze()
        return cfg

    def training_config(self, device: str | None = None) -> CfgNode:
        """The full config the run trained with (OUTPUT_DIR/config.yaml)."""
        return load_config(self.output_dir / "config.yaml", device)


def load_config(path: Path, device: str | None = None) -> CfgNode:
    """A config written by detectron2 (``config.yaml``) or by the student export, on ``device``
    (default: the config's own, with ``build_config``'s fallback to the CPU when there is no CUDA)."""
    return build_config(str(path), ["MODEL.DEVICE", device] if device else [])
