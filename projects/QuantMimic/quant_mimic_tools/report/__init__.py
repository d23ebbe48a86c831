"""The main job's report: a model-zoo table and the pictures, gathered on one index page.

    python -m quant_mimic_tools.pipeline --report-only [--output-dir output/shapes]   # rebuild it from finished runs

``write_report`` writes into the folder it is given (the main job: ``<output>/report/``): ``index.md``, ``model_zoo.md`` / ``model_zoo.json``,
``predictions.png``, ``curves.png`` and ``matching_ratio.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .curves import training_curves
from .frontier import accuracy_latency
from .index import write_index
from .matching import matching_histogram, matching_ratios
from .model_zoo import COCO_COLUMNS, format_table, measure, model_zoo_table
from .predictions import prediction_grid
from .runs import Run, load_config

__all__ = [
    "COCO_COLUMNS",
    "accuracy_latency",
    "Run",
    "format_table",
    "load_config",
    "matching_histogram",
    "matching_ratios",
    "measure",
    "model_zoo_table",
    "prediction_grid",
    "training_curves",
    "write_index",
    "write_report",
]


def write_report(
    folder: Path,
    runs: Sequence[Run],
    students: Sequence[Run],
    mimic_runs: Sequence[Run],
    extra_tables: Sequence[tuple[str, str]] = (),
    repeats: int = 20,
    metrics: Sequence[tuple[str, str]] = COCO_COLUMNS,
    title: str = "QuantMimic main job: report",
) -> Path:
    """Write the whole report into ``folder`` and return its index page.

    runs: every model of the table and of the prediction picture (teachers first);
    students: the runs whose training curves are drawn; mimic_runs: QuantMimicRCNN runs for the
    matching-ratio histogram; metrics: the (label, metrics.json key) columns of the model-zoo table, the
    first one also drawn in the training curves. Pictures use the val set the runs were evaluated on.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dataset = runs[0].training_config(device="cpu").DATASETS.TEST[0]
    rows = model_zoo_table(runs, folder, repeats=repeats, metrics=metrics, dataset=dataset)
    prediction_grid(runs, dataset, folder / "predictions.png")
    label, key = metrics[0]
    curve_metric = (label if label.startswith("AP") else f"{label} AP", key)  # "AP50", "easy AP"
    training_curves(students, folder / "curves.png", curve_metric)
    means = matching_histogram(mimic_runs, dataset, folder / "matching_ratio.png") if mimic_runs else {}
    matching = ", ".join(f"{name} {mean:.2f}" for name, mean in means.items())
    pictures = [
        (
            "Predictions on the same val images",
            "Ground truth, then each model (score >= 0.5), one row per image.",
            "predictions.png",
        ),
        (
            "Training curves",
            f"Detection losses, mimic loss and val {curve_metric[0]} of the students against iterations.",
            "curves.png",
        ),
        (
            "Matching ratio (paper Fig. 5)",
            "Per-RoI share of teacher/student feature elements closer than the threshold, on the "
            f"students' top proposals of val images. Mean per run: {matching or 'no mimic run'}.",
            "matching_ratio.png",
        ),
    ]
    tables = [("Model zoo", format_table(rows, metrics)), *extra_tables]
    return write_index(folder, title, tables, pictures)
