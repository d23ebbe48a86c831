"""The model-zoo table: accuracy, size, GFLOPs and CPU latency of every run, as Markdown and JSON."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from quant_mimic.analysis import deployed_latency, model_cost
from quant_mimic.deploy import DeployedPredictor, export_deployed

from ..results import finite_metric, table_cell
from .runs import Run

# (label, metrics.json key) of the table's accuracy columns on a COCO-format val set.
COCO_COLUMNS = (("AP", "bbox/AP"), ("AP50", "bbox/AP50"), ("APs", "bbox/APs"))


def test_input_size(cfg: CfgNode, dataset: str | None = None) -> tuple[int, int]:
    """(height, width) of the network input the cost is measured at: the test size (square), or, for a
    config that tests at the original size (``INPUT.MIN_SIZE_TEST 0``, WIDER FACE), the size of the first
    image of ``dataset``."""
    if cfg.INPUT.MIN_SIZE_TEST > 0 or dataset is None:
        size = cfg.INPUT.MIN_SIZE_TEST or cfg.INPUT.MAX_SIZE_TEST
        return size, size
    first = DatasetCatalog.get(dataset)[0]
    if "height" in first and "width" in first:
        return int(first["height"]), int(first["width"])
    from detectron2.data.detection_utils import read_image

    return read_image(first["file_name"]).shape[:2]


def measure(
    run: Run,
    repeats: int = 20,
    warmup: int = 5,
    metrics: Sequence[tuple[str, str]] = COCO_COLUMNS,
    dataset: str | None = None,
) -> dict:
    """One table row: the final evaluation of ``run`` (``metrics``: (label, metrics.json key) columns),
    and the cost of its detector (trained weights, so the proposal and detection counts are the real
    ones) at the test size (:func:`test_input_size`, ``dataset``: the val set) on the CPU: latency of its
    deployed form (``quant_mimic.deploy``, the fastest backend here) and, for comparison, of the eager
    GeneralizedRCNN."""
    cfg = run.detector_config(device="cpu")
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    height, width = test_input_size(cfg, dataset)
    with torch.no_grad():
        cost = model_cost(cfg, height, width, repeats=repeats, warmup=warmup, model=model)
    with tempfile.TemporaryDirectory() as tmp:
        predictor = DeployedPredictor(export_deployed(cfg, model.eval(), tmp))
        deployed = deployed_latency(predictor, height, width, repeats=repeats, warmup=warmup)
    final = run.final_evaluation()
    return {
        "model": run.name,
        "description": run.description,
        **{label: finite_metric(final.get(key)) for label, key in metrics},
        "params_M": round(cost["params"] / 1e6, 4),
        "gflops": round(cost["gflops"], 4),
        "latency_ms": round(deployed["latency_ms"]["total"], 2),
        "latency_parts_ms": {k: round(v, 2) for k, v in deployed["latency_ms"].items() if k != "total"},
        "backend": predictor.backend,
        "eager_latency_ms": round(cost["latency_ms"]["total"], 2),
        "test_size": [height, width],
        "threads": cost["threads"],
        "config": run.config,
        "checkpoint": str(run.checkpoint),
    }


def model_zoo_table(
    runs: Sequence[Run], folder: Path, metrics: Sequence[tuple[str, str]] = COCO_COLUMNS, **kwargs
) -> list[dict]:
    """Measure every run and write ``model_zoo.md`` and ``model_zoo.json`` into ``folder``."""
    rows = [measure(run, metrics=metrics, **kwargs) for run in runs]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_zoo.json").write_text(json.dumps(rows, indent=2) + "\n")
    (folder / "model_zoo.md").write_text(format_table(rows, metrics))
    return rows


def format_table(rows: Sequence[dict], metrics: Sequence[tuple[str, str]] = COCO_COLUMNS) -> str:
    """The Markdown table of ``model_zoo_table``'s rows."""
    labels = [label for label, _ in metrics]
    lines = [
        "| model | "
        + " | ".join(labels)
        + " | params (M) | GFLOPs | CPU latency (ms) | eager (ms) | config | "
        "checkpoint |",
        "|---" * (len(labels) + 7) + "|",
    ]
    for r in rows:
        cells = [table_cell(r.get(k)) for k in labels]
        cells += [f"{r['params_M']:.3f}", f"{r['gflops']:.3f}", f"{r['latency_ms']:.1f}"]
        cells += [f"{r['eager_latency_ms']:.1f}"]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {r['config']} | {r['checkpoint']} |")
    if rows:
        r = rows[0]
        lines.append("")
        lines.append(
            f"GFLOPs (fvcore, one multiply-add = one flop) and latency for one {r['test_size'][0]}x"
            f"{r['test_size'][1]} image; latency is the median of repeated CPU runs ({r['threads']} threads), "
            f"warm-up excluded, with the trained weights, of the deployed model ({r['backend']}; "
            "python -m quant_mimic_tools.deploy); eager: detectron2's GeneralizedRCNN."
        )
    return "\n".join(lines) + "\n"
