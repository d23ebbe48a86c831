"""WIDER FACE prediction files in the official format, read back for :func:`evaluate_wider_face`.

The official tools (``eval_tools/wider_eval.m``, and the Python ports) read one text file per val image,
``<pred>/<event>/<image>.txt``::

    <image name>                (e.g. 0_Parade_marchingband_1_465, with or without .jpg or the event)
    <number of detections>
    x y w h score               (one line per detection: pixels of the original image, raw score)
    ...

which is what :class:`~quant_mimic.evaluation.WiderFaceEvaluator` writes with an ``output_dir``.
"""

from __future__ import annotations

import os
from typing import Dict, List, NamedTuple, Tuple

import numpy as np

from ..data.wider_face_gt import WiderFaceGroundTruth
from ..errors import QuantMimicInputError

__all__ = ["WiderFacePredictions", "read_wider_face_predictions"]

_FORMAT = "the official format: the image name, the number of detections, then one 'x y w h score' line each"


class WiderFacePredictions(NamedTuple):
    """``boxes``: (event index, image index) -> (n, 5) ``x y w h score``; ``missing``: ground-truth images
    without a prediction file (``<event>/<image>``); ``unknown``: prediction files of no ground-truth image."""

    boxes: Dict[Tuple[int, int], np.ndarray]
    missing: List[str]
    unknown: List[str]


def read_prediction_file(path: str) -> np.ndarray:
    """The (n, 5) ``x y w h score`` array of one official prediction file; raises
    :class:`QuantMimicInputError` naming the file and the line for anything else."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f.read().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) < 2:
        raise QuantMimicInputError(
            f"The prediction file {path} has {len(lines)} line(s), fewer than the image name and the number of "
            f"detections: write {_FORMAT}."
        )
    try:
        count = int(float(lines[1]))
    except ValueError:
        raise QuantMimicInputError(
            f"The prediction file {path} line 2 is {lines[1][:40]!r}, not the number of detections: write {_FORMAT}."
        ) from None
    rows = lines[2:]
    if len(rows) != count:
        raise QuantMimicInputError(
            f"The prediction file {path} announces {count} detections on line 2 but has {len(rows)} detection "
            f"lines: write the file completely ({_FORMAT})."
        )
    boxes = np.zeros((count, 5), dtype=np.float64)
    for k, row in enumerate(rows):
        parts = row.split()
        try:
            values = [float(v) for v in parts]
        except ValueError:
            values = []
        if len(values) != 5:
            raise QuantMimicInputError(
                f"The prediction file {path} line {k + 3} is {row[:60]!r}, not 'x y w h score': write {_FORMAT}."
            )
        boxes[k] = values
    return boxes


def read_wider_face_predictions(pred_dir: str, gt: WiderFaceGroundTruth) -> WiderFacePredictions:
    """Read ``<pred_dir>/<event>/<image>.txt`` for every image of ``gt`` (images without a file have no
    detections; the official tool would stop there)."""
    if not os.path.isdir(pred_dir):
        raise QuantMimicInputError(
            f"The prediction folder {pred_dir} does not exist: pass the folder that holds one sub-folder per event."
        )
    boxes: Dict[Tuple[int, int], np.ndarray] = {}
    missing: List[str] = []
    known = set()
    for e, event in enumerate(gt.events):
        for j, name in enumerate(gt.files[e]):
            rel = os.path.join(event, name + ".txt")
            known.add(rel)
            path = os.path.join(pred_dir, rel)
            if os.path.isfile(path):
                boxes[(e, j)] = read_prediction_file(path)
            else:
                missing.append(f"{event}/{name}")
    if not boxes:
        raise QuantMimicInputError(
            f"The prediction folder {pred_dir} holds no <event>/<image>.txt of the ground truth's images (e.g. "
            f"{gt.events[0]}/{gt.files[0][0] if gt.files[0] else '...'}.txt): pass the folder whose sub-folders "
            "are the event names."
        )
    unknown = []
    for event in sorted(os.listdir(pred_dir)):
        folder = os.path.join(pred_dir, event)
        if os.path.isdir(folder):
            unknown += [
                f"{event}/{f}"
                for f in sorted(os.listdir(folder))
                if f.endswith(".txt") and os.path.join(event, f) not in known
            ]
    return WiderFacePredictions(boxes, missing, unknown)
