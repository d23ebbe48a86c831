"""Predictions of several detectors on the same images, side by side (Detectron2's Visualizer)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.utils.visualizer import Visualizer

from .runs import Run

TITLE_HEIGHT = 28  # px of the title strip above each column


def _titled(image_bgr: np.ndarray, title: str) -> np.ndarray:
    strip = np.full((TITLE_HEIGHT, image_bgr.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, image_bgr])


def prediction_grid(
    runs: Sequence[Run],
    dataset: str,
    path: Path,
    num_images: int = 4,
    threshold: float = 0.5,
    scale: float = 1.5,
) -> Path:
    """Write a PNG: one row per image (the first ``num_images`` of ``dataset``), one column for the
    ground truth and one per run, boxes with score >= ``threshold``. Returns ``path``.

    Every tile is the image at ``scale`` times its size; the picture is
    ``(1 + len(runs)) * W * scale`` wide and ``num_images * (H * scale + TITLE_HEIGHT)`` high."""
    dicts = DatasetCatalog.get(dataset)[:num_images]
    metadata = MetadataCatalog.get(dataset)
    images = [read_image(d["file_name"], format="RGB") for d in dicts]
    columns = []
    gt = [
        Visualizer(im, metadata, scale=scale).draw_dataset_dict(d).get_image() for im, d in zip(images, dicts)
    ]
    columns.append(("ground truth", gt))
    for run in runs:
        cfg = run.detector_config(device="cpu")
        cfg.defrost()
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = threshold
        cfg.freeze()
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        # the evaluation's own input: the image in INPUT.FORMAT (BGR, RGB or L) at the test size
        mapper = DatasetMapper(cfg, is_train=False)
        drawn = []
        for image, d in zip(images, dicts):
            with torch.no_grad():
                instances = model([mapper(dict(d))])[0]["instances"].to("cpu")
            drawn.append(
                Visualizer(image, metadata, scale=scale).draw_instance_predictions(instances).get_image()
            )
        columns.append((run.name, drawn))
    rows = []
    for i in range(len(images)):
        tiles = [_titled(np.ascontiguousarray(col[i][:, :, ::-1]), title) for title, col in columns]
        rows.append(np.hstack(tiles))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows))
    return path
