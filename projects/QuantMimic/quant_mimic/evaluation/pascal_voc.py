"""Pascal VOC evaluation with the AP50 of every class beside the mean.

detectron2's ``PascalVOCDetectionEvaluator`` computes the AP of every class at every IoU threshold
(``voc_eval``, a port of the devkit) and returns only the means. :class:`PascalVOCPerClassEvaluator` is the
same evaluator (same predictions, same ``voc_eval`` calls, same ``AP`` / ``AP50`` / ``AP75``) that also
returns ``AP50-<class>`` for every class, logs them as a table, and with ``output_dir`` writes the devkit's
per-class detection files (``comp4_det_<split>_<class>.txt``), which ``python -m quant_mimic_tools.voc_eval``
evaluates again. :func:`evaluate_voc_detection_files` is that command's evaluation of such files.

A class without any (non-difficult) object in the evaluated split has no AP (NaN, "no ground truth"), and
the means are over the classes that have objects; detectron2's would be NaN (every class is present in
the VOC test set, so its numbers are unchanged there).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import OrderedDict, defaultdict
from typing import Dict, List, Mapping, Sequence

import numpy as np
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.evaluation.pascal_voc_evaluation import parse_rec, voc_eval
from detectron2.utils import comm

from ..errors import QuantMimicInputError

__all__ = [
    "IOU_THRESHOLDS",
    "PascalVOCPerClassEvaluator",
    "evaluate_voc_detection_files",
    "format_per_class_table",
    "voc_summary",
]

logger = logging.getLogger(__name__)

IOU_THRESHOLDS = tuple(range(50, 100, 5))  # percent, as detectron2: AP is the mean over them


def _literal(path: str) -> str:
    """A ``str.format`` template that formats to ``path`` whatever the argument (voc_eval formats its
    detection path with the class name)."""
    return path.replace("{", "{{").replace("}", "}}")


def _class_aps(
    det_files: Mapping[str, str],
    anno_template: str,
    image_set: str,
    class_names: Sequence[str],
    use_07_metric: bool,
    thresholds: Sequence[int] = IOU_THRESHOLDS,
) -> Dict[str, Dict[int, float]]:
    """class -> {IoU threshold in percent -> AP in percent (NaN: no ground truth)} with detectron2's
    ``voc_eval``; ``det_files``: class -> devkit detection file."""
    with open(image_set) as f:
        image_ids = [line.strip() for line in f if line.strip()]
    counted = {name: 0 for name in class_names}  # non-difficult objects, voc_eval's npos
    for image_id in image_ids:
        for obj in parse_rec(anno_template.format(image_id)):  # cached: voc_eval reads the same
            if obj["name"] in counted and not obj["difficult"]:
                counted[obj["name"]] += 1
    aps: Dict[str, Dict[int, float]] = {}
    for name in class_names:
        aps[name] = {}
        if counted[name] == 0:  # voc_eval would give 0 without detections and NaN with some
            aps[name] = {t: float("nan") for t in thresholds}
            continue
        for thresh in thresholds:
            with np.errstate(divide="ignore", invalid="ignore"):  # no ground truth: recall 0/0
                _, _, ap = voc_eval(
                    _literal(det_files[name]),
                    anno_template,
                    image_set,
                    name,
                    ovthresh=thresh / 100.0,
                    use_07_metric=use_07_metric,
                )
            aps[name][thresh] = float(ap) * 100 if np.isfinite(ap) else float("nan")
    return aps


def voc_summary(aps: Mapping[str, Mapping[int, float]]) -> OrderedDict[str, float]:
    """``AP`` (mean over IoU .50:.95), ``AP50``, ``AP75`` (means over the classes with ground truth) and
    ``AP50-<class>`` for every class, in percent, from :func:`_class_aps`'s table."""
    thresholds = sorted(next(iter(aps.values())))

    def mean_at(t: int) -> float:
        values = [a[t] for a in aps.values() if np.isfinite(a[t])]
        return float(np.mean(values)) if values else float("nan")

    means = {t: mean_at(t) for t in thresholds}
    out: OrderedDict[str, float] = OrderedDict()
    if len(thresholds) > 1:
        out["AP"] = float(np.mean(list(means.values())))
    out["AP50"] = means[50]
    if 75 in means:
        out["AP75"] = means[75]
    for name, a in aps.items():
        out[f"AP50-{name}"] = a[50]
    return out


def format_per_class_table(result: Mapping[str, float], title: str = "") -> str:
    """A Markdown table: AP50 of every class, then the mean over the classes (and AP, AP75)."""
    per_class = [(k[len("AP50-") :], v) for k, v in result.items() if k.startswith("AP50-")]
    lines = [title, ""] if title else []
    lines += ["| class | AP50 |", "|---|---|"]
    lines += [f"| {name} | {'-' if not np.isfinite(v) else f'{v:.1f}'} |" for name, v in per_class]
    counted = sum(1 for _, v in per_class if np.isfinite(v))
    lines.append(f"| **mean ({counted} classes)** | **{result['AP50']:.1f}** |")
    rest = [f"{k} {result[k]:.1f}" for k in ("AP", "AP75") if k in result]
    if rest:
        lines += ["", "AP over IoU .50:.95 and at .75: " + ", ".join(rest) + "."]
    if counted < len(per_class):
        lines += ["", "-: no object of the class in the evaluated split (left out of the means)."]
    return "\n".join(lines)


class PascalVOCPerClassEvaluator(PascalVOCDetectionEvaluator):
    """detectron2's ``PascalVOCDetectionEvaluator`` that also returns (and logs) ``AP50-<class>``.

    ``evaluate()`` returns ``{"bbox": {"AP", "AP50", "AP75", "AP50-<class>", ...}}`` (percent). With
    ``output_dir``, the gathered detections are also written there as the devkit's result files
    ``comp4_det_<split>_<class>.txt`` (``image_id score xmin ymin xmax ymax``, 1-based corners).
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None):
        super().__init__(dataset_name)
        self._output_dir = output_dir
        self._split = os.path.splitext(os.path.basename(self._image_set_path))[0]

    def evaluate(self):
        all_predictions = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return
        predictions = defaultdict(list)
        for per_rank in all_predictions:
            for cls_id, lines in per_rank.items():
                predictions[cls_id].extend(lines)
        del all_predictions
        metric = "VOC2007 11-point" if self._is_2007 else "VOC2010+ area-under-curve"
        self._logger.info(f"Evaluating {self._dataset_name} with the {metric} AP (detectron2's voc_eval).")
        with tempfile.TemporaryDirectory(prefix="pascal_voc_eval_") as tmp:
            folder = self._output_dir or tmp
            os.makedirs(folder, exist_ok=True)
            det_files = {}
            for cls_id, name in enumerate(self._class_names):
                det_files[name] = os.path.join(folder, f"comp4_det_{self._split}_{name}.txt")
                with open(det_files[name], "w") as f:
                    f.write("\n".join(predictions.get(cls_id, [])))
            aps = _class_aps(
                det_files, self._anno_file_template, self._image_set_path, self._class_names, self._is_2007
            )
        result = voc_summary(aps)
        self._logger.info(
            "\n" + format_per_class_table(result, f"Per-class AP50 on {self._dataset_name} ({metric} AP):")
        )
        return OrderedDict(bbox=result)


# ---------------------------------------------------------------------------------------------------------
# Devkit result files (the voc_eval command)
# ---------------------------------------------------------------------------------------------------------


def _find_detection_files(pred_dir: str, class_names: Sequence[str]) -> Dict[str, str | None]:
    """class -> its file in ``pred_dir``: ``<class>.txt`` or ``<anything>_<class>.txt`` (the devkit's
    ``comp4_det_test_<class>.txt``); None when there is none."""
    files = sorted(f for f in os.listdir(pred_dir) if f.endswith(".txt"))
    found: Dict[str, str | None] = {}
    for name in class_names:
        matches = [f for f in files if f == f"{name}.txt" or f.endswith(f"_{name}.txt")]
        if len(matches) > 1:
            # "comp4_det_test_car.txt" also ends like a class "det_test_car": prefer the longest class name
            longer = [c for c in class_names if c != name and c.endswith(name)]
            matches = [
                f for f in matches if not any(f == f"{c}.txt" or f.endswith(f"_{c}.txt") for c in longer)
            ]
        if len(matches) > 1:
            raise QuantMimicInputError(
                f"{pred_dir} holds several detection files of class {name!r} ({', '.join(matches)}): keep one per "
                "class."
            )
        found[name] = os.path.join(pred_dir, matches[0]) if matches else None
    return found


def _check_detection_file(path: str, image_ids: set) -> int:
    """Every line is ``image_id score xmin ymin xmax ymax`` of an image of the split; returns the count."""
    n = 0
    with open(path, encoding="utf-8") as f:
        for k, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            try:
                [float(v) for v in parts[1:]]
                ok = len(parts) == 6
            except ValueError:
                ok = False
            if not ok:
                raise QuantMimicInputError(
                    f"The detection file {path} line {k} is {line.strip()[:60]!r}, not 'image_id score xmin ymin "
                    "xmax ymax': fix the line (the devkit's result format, one detection per line)."
                )
            if parts[0] not in image_ids:
                raise QuantMimicInputError(
                    f"The detection file {path} line {k} names image {parts[0]!r}, which the image set does not "
                    "list: evaluate the split the detections were made on (--split)."
                )
            n += 1
    return n


def evaluate_voc_detection_files(
    pred_dir: str,
    voc_dir: str,
    split: str,
    class_names: Sequence[str],
    use_07_metric: bool,
    thresholds: Sequence[int] = IOU_THRESHOLDS,
) -> tuple[OrderedDict[str, float], Dict[str, int], List[str]]:
    """Evaluate the devkit result files in ``pred_dir`` against ``voc_dir`` (Annotations/,
    ImageSets/Main/<split>.txt) as :class:`PascalVOCPerClassEvaluator` does.

    Returns:
        (:func:`voc_summary`'s dict, class -> number of detections, classes without a detection file).
    """
    from ..data.voc import read_image_set

    image_set = os.path.join(voc_dir, "ImageSets", "Main", f"{split}.txt")
    image_ids = set(read_image_set(voc_dir, split))
    files = _find_detection_files(pred_dir, class_names)
    missing = [c for c, f in files.items() if f is None]
    if len(missing) == len(class_names):
        raise QuantMimicInputError(
            f"{pred_dir} holds no detection file of any class (<class>.txt or comp4_det_{split}_<class>.txt, e.g. "
            f"for {class_names[0]!r}): pass the folder of the per-class result files."
        )
    counts = {c: _check_detection_file(f, image_ids) if f else 0 for c, f in files.items()}
    with tempfile.TemporaryDirectory(prefix="voc_eval_") as tmp:
        empty = os.path.join(tmp, "empty.txt")
        open(empty, "w").close()
        det_files = {c: f or empty for c, f in files.items()}
        anno_template = os.path.join(voc_dir, "Annotations", "{}.xml")
        aps = _class_aps(det_files, anno_template, image_set, class_names, use_07_metric, thresholds)
    return voc_summary(aps), counts, missing
