"""Reading a training run's results and writing its metrics: shared by the main job and its report.

Plain Python (no detectron2), so both :mod:`quant_mimic_tools.pipeline` and
:mod:`quant_mimic_tools.report` import it, and the pipeline imports the report one way only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def read_metrics(output_dir: Path) -> list[dict]:
    """Every row of ``output_dir/metrics.json`` (training rows and evaluations; [] if there is none)."""
    path = output_dir / "metrics.json"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# metrics.json keys of an evaluation row start with its evaluator's task: COCO and VOC write ``bbox/AP``...,
# the WIDER FACE evaluator ``wider_face/easy``... (training rows have ``total_loss``, ``rpn/...``, ...).
EVALUATION_PREFIXES = ("bbox/", "wider_face/")


def is_evaluation(row: dict) -> bool:
    """Whether a metrics.json row holds an evaluation's results."""
    return any(k.startswith(EVALUATION_PREFIXES) for k in row)


def read_final_metrics(output_dir: Path) -> dict | None:
    """The last evaluation in ``output_dir/metrics.json`` (None if the run has not finished)."""
    if not (output_dir / "model_final.pth").exists():
        return None
    evaluations = [m for m in read_metrics(output_dir) if is_evaluation(m)]
    return evaluations[-1] if evaluations else None


def finite_metric(x: float | None) -> float | None:
    """``x`` rounded to 3 decimals, or None for a missing or NaN value (COCO gives NaN for an object
    size the data set does not have)."""
    return round(x, 3) if x is not None and math.isfinite(x) else None


def table_cell(x: float | None) -> str:
    """A metric as a Markdown table cell: one decimal, "-" for None."""
    return "-" if x is None else f"{x:.1f}"
