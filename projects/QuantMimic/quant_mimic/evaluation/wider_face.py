"""The official WIDER FACE evaluation (``eval_tools/wider_eval.m``) as a detectron2 ``DatasetEvaluator``.

What the official tool does, and this module does the same way:

1. Ground truth comes from ``eval_tools/ground_truth``: ``wider_face_val.mat`` (``event_list``: (E, 1) cell of
   event names; ``file_list``: (E, 1) cell of (n_e, 1) cells of image names without extension;
   ``face_bbx_list``: the same nesting of (k, 4) ``x y w h`` pixel boxes) and ``wider_{easy,medium,hard}_val.mat``
   (``gt_list``: the same nesting of (m, 1) 1-based indices of the faces that count at that difficulty). The
   other faces of an image are *ignored*: a detection matched to one of them is neither a true nor a false
   positive, and they are not in the recall's denominator.
2. Scores are normalised over all predictions of all images: ``(s - min) / (max - min)`` (``norm_score``).
3. Per image, detections in descending score order are matched greedily: each takes the face with the
   highest IoU (``+1`` pixel convention of ``boxoverlap.m``, boxes ``x1, y1, x1 + w, y1 + h``); if that IoU is
   ``>= 0.5`` and the face is ignored, the detection is discarded; if the face counts and is not yet found,
   it is found; otherwise (IoU too low, or face already found) the detection is a false positive.
4. For ``N = 1000`` thresholds ``1 - t / N`` (t = 1..N), each image contributes the number of its kept
   detections with normalised score ``>=`` the threshold and the number of faces they found. Summed over
   images: precision = found / kept detections, recall = found / number of counted faces.
5. AP is the area under the interpolated precision-recall curve (``VOCap``: precision made monotone from
   the right, summed over the recall steps).

Official quirks kept on purpose: images without any ground-truth box (or without detections) are skipped,
so detections there are not false positives; faces of images without detections still count in recall.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Mapping, Tuple

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.wider_face_gt import (
    GT_FILE,
    SETTING_FILES,
    WIDER_SETTINGS,
    WiderFaceGroundTruth,
    load_wider_face_gt,
    write_wider_face_gt,
)
from ..errors import QuantMimicInputError

__all__ = [
    "WIDER_SETTINGS",
    "WiderFaceEvaluator",
    "WiderFaceGroundTruth",
    "box_overlaps_plus1",
    "evaluate_wider_face",
    "image_eval",
    "image_pr_info",
    "load_wider_face_gt",
    "normalize_scores",
    "voc_ap",
    "write_wider_face_gt",
]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# The algorithm
# ---------------------------------------------------------------------------------------------------------


def normalize_scores(predictions: Mapping[object, np.ndarray]) -> Dict[object, np.ndarray]:
    """Official ``norm_score``: every score becomes ``(s - min) / (max - min)`` over all images.

    Args:
        predictions: key -> (n, 5) array ``x y w h score``.

    Returns:
        new arrays with column 4 normalised to [0, 1]. If all scores are equal (the official tool would
        divide by zero), they all become 1.
    """
    scores = [p[:, 4] for p in predictions.values() if len(p)]
    out = {k: np.array(p, dtype=np.float64).reshape(-1, 5) for k, p in predictions.items()}
    if not scores:
        return out
    all_scores = np.concatenate(scores)
    lo, hi = float(all_scores.min()), float(all_scores.max())
    for p in out.values():
        p[:, 4] = (p[:, 4] - lo) / (hi - lo) if hi > lo else 1.0
    return out


def box_overlaps_plus1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (P, 4) boxes ``a`` with (G, 4) boxes ``b``, corners ``x1 y1 x2 y2`` in pixels, with the official
    ``boxoverlap.m`` convention that a box spans ``x2 - x1 + 1`` pixels. Returns (P, G)."""
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    iw = ix2 - ix1 + 1
    ih = iy2 - iy1 + 1
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area_a[:, None] + area_b[None, :] - inter)
    iou[(iw <= 0) | (ih <= 0)] = 0.0
    return iou


def image_eval(
    pred: np.ndarray, gt: np.ndarray, counted: np.ndarray, iou_thresh: float = 0.5
) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy matching of one image (official ``image_evaluation``).

    Args:
        pred: (P, 5) ``x y w h score``, sorted by descending score.
        gt: (G, 4) ``x y w h``.
        counted: (G,) bool, True for the faces that count at this difficulty (False: ignored).
        iou_thresh: minimum IoU of a match.

    Returns:
        pred_recall: (P,) number of counted faces found by detections ``0..h``;
        kept: (P,) bool, False for detections discarded because they matched an ignored face.
    """
    p = pred[:, :4].astype(np.float64).copy()
    g = gt.astype(np.float64).copy()
    p[:, 2:] += p[:, :2]
    g[:, 2:] += g[:, :2]
    overlaps = box_overlaps_plus1(p, g)
    best = overlaps.argmax(axis=1)  # the first of equal maxima, like MATLAB's max
    matched = overlaps[np.arange(len(p)), best] >= iou_thresh
    found = np.zeros(len(g), dtype=np.int8)  # 0: not found, 1: found, -1: ignored face hit
    kept = np.ones(len(p), dtype=bool)
    pred_recall = np.zeros(len(p), dtype=np.int64)
    n_found = 0
    for h in range(len(p)):
        j = int(best[h])
        if matched[h]:
            if not counted[j]:
                found[j] = -1
                kept[h] = False
            elif found[j] == 0:
                found[j] = 1
                n_found += 1
        pred_recall[h] = n_found
    return pred_recall, kept


def _thresholds(thresh_num: int) -> np.ndarray:
    return np.array([1 - (t + 1) / thresh_num for t in range(thresh_num)])


def image_pr_info(
    scores: np.ndarray, kept: np.ndarray, pred_recall: np.ndarray, thresh_num: int = 1000
) -> np.ndarray:
    """Official ``image_pr_info``: for each threshold ``1 - t / thresh_num`` (t = 1..thresh_num), the number
    of kept detections and of found faces among the detections scoring ``>=`` it.

    Args:
        scores: (P,) normalised scores in descending order.
        kept, pred_recall: from :func:`image_eval`.

    Returns:
        (thresh_num, 2) float64: [:, 0] kept detections, [:, 1] found faces.
    """
    # Scores are sorted, so "the last detection with score >= thresh" is at (count - 1).
    counts = np.searchsorted(-scores, -_thresholds(thresh_num), side="right")
    cum_kept = np.concatenate(([0], np.cumsum(kept)))
    cum_recall = np.concatenate(([0], pred_recall))
    return np.stack([cum_kept[counts], cum_recall[counts]], axis=1).astype(np.float64)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the interpolated PR curve (``VOCap``): precision made non-increasing from the right (NaN
    precisions, at thresholds without detections, impose nothing, as MATLAB's ``max`` ignores NaN), summed
    over the steps of recall."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = np.fmax(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def evaluate_wider_face(
    predictions: Mapping[Tuple[int, int], np.ndarray],
    gt: WiderFaceGroundTruth,
    iou_thresh: float = 0.5,
    thresh_num: int = 1000,
) -> OrderedDict[str, float]:
    """AP (in [0, 1]) for easy / medium / hard, as the official tool computes it.

    Args:
        predictions: (event index, image index) -> (n, 5) ``x y w h score`` (pixels, raw scores); images
            without an entry have no detections.
        gt: from :func:`load_wider_face_gt`.

    Returns:
        ``OrderedDict(easy=..., medium=..., hard=...)``; NaN for a setting without any counted face.
    """
    preds = normalize_scores(predictions)
    for k, p in preds.items():
        preds[k] = p[np.argsort(-p[:, 4], kind="stable")]
    results: OrderedDict[str, float] = OrderedDict()
    for setting in WIDER_SETTINGS:
        pr_curve = np.zeros((thresh_num, 2))
        count_face = 0
        for e, j in itertools.chain.from_iterable(
            ((e, j) for j in range(len(gt.files[e]))) for e in range(len(gt.events))
        ):
            keep_idx = gt.counted[setting][e][j]
            count_face += len(keep_idx)
            boxes = gt.boxes[e][j]
            pred = preds.get((e, j))
            if len(boxes) == 0 or pred is None or len(pred) == 0:
                continue
            counted = np.zeros(len(boxes), dtype=bool)
            counted[keep_idx - 1] = True
            pred_recall, kept = image_eval(pred, boxes, counted, iou_thresh)
            pr_curve += image_pr_info(pred[:, 4], kept, pred_recall, thresh_num)
        if count_face == 0:
            logger.warning(f"WIDER FACE {setting}: no face counts at this difficulty; its AP is undefined.")
            results[setting] = float("nan")
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = pr_curve[:, 1] / pr_curve[:, 0]
        recall = pr_curve[:, 1] / count_face
        results[setting] = voc_ap(recall, precision)
    return results


# ---------------------------------------------------------------------------------------------------------
# The detectron2 evaluator
# ---------------------------------------------------------------------------------------------------------


class WiderFaceEvaluator(DatasetEvaluator):
    """Official WIDER FACE val AP (easy / medium / hard) of a detectron2 model's face detections.

    ``process`` keeps, per input image, its ``pred_boxes`` (XYXY, pixels of the original image) as
    ``x y w h score``; ``evaluate`` maps each image's ``file_name`` (``.../<event>/<image>.jpg``) to the
    official lists and returns ``{"wider_face": {"easy": AP, "medium": AP, "hard": AP}}`` with AP in percent.
    With ``output_dir`` it also writes the prediction files the official MATLAB / Python tools read,
    ``<output_dir>/<event>/<image>.txt`` (image name, count, then ``x y w h score`` lines with raw scores),
    one for every image of the ground truth.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        gt_dir: str | None = None,
        iou_thresh: float = 0.5,
        thresh_num: int = 1000,
        distributed: bool = True,
    ):
        """
        Args:
            dataset_name: a registered data set; its metadata ``gt_dir`` locates the .mat files unless
                ``gt_dir`` is given.
            output_dir: where to write the official per-image prediction files (None: nothing written).
            gt_dir: folder of ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``.
            iou_thresh: IoU of a match (official: 0.5).
            thresh_num: number of score thresholds of the PR curve (official: 1000).
            distributed: gather the predictions of all processes before evaluating.
        """
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._iou_thresh = iou_thresh
        self._thresh_num = thresh_num
        self._distributed = distributed
        gt_dir = gt_dir or MetadataCatalog.get(dataset_name).get("gt_dir", None)
        if gt_dir is None:
            raise QuantMimicInputError(
                f"Dataset {dataset_name!r} has no WIDER FACE ground truth (metadata gt_dir): the official "
                "evaluation exists for the val split only, so put wider_face_val in DATASETS.TEST."
            )
        for fname in (GT_FILE, *SETTING_FILES.values()):
            if not os.path.isfile(os.path.join(gt_dir, fname)):
                raise QuantMimicInputError(
                    f"The WIDER FACE ground-truth file {os.path.join(gt_dir, fname)} does not exist: extract "
                    "eval_tools.zip of the official release into the WIDER_FACE folder (see datasets/README.md)."
                )
        self._gt_dir = gt_dir
        self._cpu = torch.device("cpu")
        self.reset()

    def reset(self) -> None:
        self._predictions: List[Tuple[str, str, np.ndarray]] = []

    def process(self, inputs, outputs) -> None:
        """Keep (file_name, image_id, (n, 5) ``x y w h score``) per image."""
        for inp, out in zip(inputs, outputs):
            instances = out["instances"].to(self._cpu)
            boxes = instances.pred_boxes.tensor.numpy().astype(np.float64)
            scores = instances.scores.numpy().astype(np.float64)
            dets = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2], scores[:, None]], axis=1)
            self._predictions.append((str(inp.get("file_name", "")), str(inp.get("image_id", "")), dets))

    @staticmethod
    def _index(gt: WiderFaceGroundTruth) -> Tuple[Dict[Tuple[str, str], Tuple[int, int]], Dict[str, list]]:
        by_event_name, by_name = {}, {}
        for e, (event, names) in enumerate(zip(gt.events, gt.files)):
            for j, name in enumerate(names):
                by_event_name[(event, name)] = (e, j)
                by_name.setdefault(name, []).append((e, j))
        return by_event_name, by_name

    @staticmethod
    def _locate(
        file_name: str, image_id: str, by_event_name: Mapping, by_name: Mapping
    ) -> Tuple[int, int] | None:
        """(event index, image index) of an input: by ``<event>/<image>`` of its file_name or image_id,
        else by the image name alone when it is unique (WIDER image names start with their event)."""
        for ref in (file_name, image_id):
            if not ref:
                continue
            parts = ref.replace("\\", "/").split("/")
            stem = os.path.splitext(parts[-1])[0]
            if len(parts) >= 2 and (parts[-2], stem) in by_event_name:
                return by_event_name[(parts[-2], stem)]
            if len(by_name.get(stem, ())) == 1:
                return by_name[stem][0]
        return None

    def _write_official(self, gt: WiderFaceGroundTruth, raw: Mapping[Tuple[int, int], np.ndarray]) -> None:
        for e, event in enumerate(gt.events):
            folder = os.path.join(self._output_dir, event)
            os.makedirs(folder, exist_ok=True)
            for j, name in enumerate(gt.files[e]):
                dets = raw.get((e, j), np.zeros((0, 5)))
                lines = [name, str(len(dets))]
                lines += [f"{x:.2f} {y:.2f} {w:.2f} {h:.2f} {s:.6f}" for x, y, w, h, s in dets]
                with open(os.path.join(folder, name + ".txt"), "w") as f:
                    f.write("\n".join(lines) + "\n")

    def evaluate(self):
        """Returns ``OrderedDict(wider_face={"easy": AP, "medium": AP, "hard": AP})``, AP in percent (an
        empty dict on processes other than the main one)."""
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        gt = load_wider_face_gt(self._gt_dir)
        by_event_name, by_name = self._index(gt)
        raw: Dict[Tuple[int, int], np.ndarray] = {}
        unknown = []
        for file_name, image_id, dets in predictions:
            key = self._locate(file_name, image_id, by_event_name, by_name)
            if key is None:
                unknown.append(file_name or image_id)
                continue
            raw[key] = dets
        if unknown:
            logger.warning(
                f"{len(unknown)} image(s) of {self._dataset_name} are not in {self._gt_dir}/{GT_FILE} and are "
                f"left out of the WIDER FACE evaluation, e.g. {unknown[0]}."
            )
        n_images = sum(len(f) for f in gt.files)
        if len(raw) < n_images:
            logger.warning(
                f"WIDER FACE evaluation of {self._dataset_name}: {n_images - len(raw)} of the {n_images} "
                "ground-truth images have no predictions (they count as missed faces)."
            )
        if self._output_dir:
            self._write_official(gt, raw)
        aps = evaluate_wider_face(raw, gt, self._iou_thresh, self._thresh_num)
        result = {k: 100.0 * v for k, v in aps.items()}
        logger.info(
            "WIDER FACE AP (official protocol): " + ", ".join(f"{k} {v:.2f}" for k, v in result.items())
        )
        return OrderedDict([("wider_face", result)])
