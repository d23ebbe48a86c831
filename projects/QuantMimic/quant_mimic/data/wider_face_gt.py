"""The WIDER FACE val ground truth of the official evaluation: ``eval_tools/ground_truth/wider_face_val.mat``
and ``wider_{easy,medium,hard}_val.mat``, read and written.

``wider_face_val.mat`` holds ``event_list`` ((E, 1) cell of event names), ``file_list`` ((E, 1) cell of
(n_e, 1) cells of image names without extension) and ``face_bbx_list`` (the same nesting of (k, 4) ``x y w h``
pixel boxes); ``wider_<setting>_val.mat`` holds ``gt_list`` (the same nesting of (m, 1) 1-based indices of the
faces that count at that difficulty).
"""

from __future__ import annotations

import os
from typing import Dict, List, NamedTuple, Sequence

import numpy as np

from ..errors import QuantMimicInputError

WIDER_SETTINGS = ("easy", "medium", "hard")
GT_FILE = "wider_face_val.mat"
SETTING_FILES = {s: f"wider_{s}_val.mat" for s in WIDER_SETTINGS}


class WiderFaceGroundTruth(NamedTuple):
    """The official val ground truth, as plain Python lists indexed [event][image].

    ``boxes[e][j]`` is a (k, 4) float64 array of ``x y w h`` (pixels); ``counted[s][e][j]`` is a 1-D int
    array of the 1-based indices into ``boxes[e][j]`` of the faces that count for setting ``s``.
    """

    events: List[str]
    files: List[List[str]]
    boxes: List[List[np.ndarray]]
    counted: Dict[str, List[List[np.ndarray]]]


def _cells(x: np.ndarray) -> List:
    """The elements of a MATLAB cell array (any shape) in MATLAB's column-major order."""
    return list(np.asarray(x, dtype=object).ravel(order="F"))


def _string(x) -> str:
    """A MATLAB char array as loaded by scipy (possibly wrapped in 1-element arrays) -> str."""
    while isinstance(x, np.ndarray):
        if x.size != 1:
            if x.dtype.kind == "U" and x.ndim == 1:  # char matrix rows
                return "".join(x.tolist())
            raise ValueError(f"expected one string, found an array of shape {x.shape}")
        x = x.ravel()[0]
    return str(x)


def _load_mat(path: str, keys: Sequence[str]) -> Dict[str, np.ndarray]:
    import scipy.io

    if not os.path.isfile(path):
        raise QuantMimicInputError(
            f"The WIDER FACE ground-truth file {path} does not exist: extract eval_tools.zip of the official "
            "release into the WIDER_FACE folder (see datasets/README.md)."
        )
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises several types for a damaged file
        raise QuantMimicInputError(
            f"The WIDER FACE ground-truth file {path} cannot be read as a .mat file ({e}): replace it with the "
            "one from the official eval_tools.zip."
        ) from None
    missing = [k for k in keys if k not in mat]
    if missing:
        raise QuantMimicInputError(
            f"The WIDER FACE ground-truth file {path} has no variable {missing[0]!r}: replace it with the one "
            "from the official eval_tools.zip."
        )
    return mat


def load_wider_face_gt(gt_dir: str | os.PathLike) -> WiderFaceGroundTruth:
    """Read ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` from ``gt_dir``.

    Raises:
        QuantMimicInputError: a file is missing, unreadable, lacks a variable or does not match the nesting
            of ``wider_face_val.mat``.
    """
    gt_dir = os.fspath(gt_dir)
    main_path = os.path.join(gt_dir, GT_FILE)
    mat = _load_mat(main_path, ("event_list", "file_list", "face_bbx_list"))
    try:
        events = [_string(e) for e in _cells(mat["event_list"])]
        files = [[_string(f) for f in _cells(fl)] for fl in _cells(mat["file_list"])]
        boxes = [
            [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in _cells(bl)]
            for bl in _cells(mat["face_bbx_list"])
        ]
    except ValueError as e:
        raise QuantMimicInputError(
            f"The WIDER FACE ground-truth file {main_path} does not have the official nesting ({e}): replace it "
            "with the one from the official eval_tools.zip."
        ) from None
    if not (len(events) == len(files) == len(boxes)) or any(len(f) != len(b) for f, b in zip(files, boxes)):
        raise QuantMimicInputError(
            f"The WIDER FACE ground-truth file {main_path} has event_list, file_list and face_bbx_list of "
            "different lengths: replace it with the one from the official eval_tools.zip."
        )
    counted: Dict[str, List[List[np.ndarray]]] = {}
    for setting, fname in SETTING_FILES.items():
        path = os.path.join(gt_dir, fname)
        gt_list = [
            [np.asarray(g).reshape(-1).astype(np.int64) for g in _cells(gl)]
            for gl in _cells(_load_mat(path, ("gt_list",))["gt_list"])
        ]
        bad = len(gt_list) != len(events) or any(len(g) != len(f) for g, f in zip(gt_list, files))
        if not bad:
            bad = any(
                idx.size and (idx.min() < 1 or idx.max() > len(b))
                for g_e, b_e in zip(gt_list, boxes)
                for idx, b in zip(g_e, b_e)
            )
        if bad:
            raise QuantMimicInputError(
                f"The WIDER FACE ground-truth file {path} does not match {main_path} (numbers of events, images "
                "or face indices differ): use the files of one official eval_tools.zip."
            )
        counted[setting] = gt_list
    return WiderFaceGroundTruth(events, files, boxes, counted)


def _cell(items: Sequence) -> np.ndarray:
    """A MATLAB (n, 1) cell array, as ``scipy.io.savemat`` writes it."""
    arr = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        arr[i, 0] = item
    return arr


def write_wider_face_gt(gt_dir: str | os.PathLike, gt: WiderFaceGroundTruth) -> None:
    """Write ``gt`` as the official ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` into
    ``gt_dir`` (created): the inverse of :func:`load_wider_face_gt`, for data sets in the official layout
    that are not WIDER FACE itself (``quant_mimic.data.official_toy``)."""
    import scipy.io

    os.makedirs(gt_dir, exist_ok=True)
    scipy.io.savemat(
        os.path.join(gt_dir, GT_FILE),
        {
            "event_list": _cell(gt.events),
            "file_list": _cell([_cell(names) for names in gt.files]),
            "face_bbx_list": _cell(
                [_cell([np.asarray(b, np.float64).reshape(-1, 4) for b in bl]) for bl in gt.boxes]
            ),
        },
    )
    for setting, fname in SETTING_FILES.items():
        lists = [
            _cell([np.asarray(g, np.float64).reshape(-1, 1) for g in per_event])
            for per_event in gt.counted[setting]
        ]
        scipy.io.savemat(os.path.join(gt_dir, fname), {"gt_list": _cell(lists)})
