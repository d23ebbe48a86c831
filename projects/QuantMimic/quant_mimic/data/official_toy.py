"""Small data sets in the official on-disk layouts of Pascal VOC and WIDER FACE, drawn so that a detector
can learn them: what the paper's VOC and WIDER FACE configs are run on end to end without the real data
(``python -m quant_mimic_tools.pipeline --setting voc|wider_face --smoke``, and the tests).

:func:`write_toy_voc` writes ``<root>/VOC2007`` (``trainval``, ``test``) and ``<root>/VOC2012``
(``trainval``): JPEG images, one XML per image with every field detectron2's loader and the VOC07
evaluation read, and the image sets, so that detectron2's ``voc_2007_trainval``, ``voc_2012_trainval``
and ``voc_2007_test`` (the configs' data sets) load them with ``DETECTRON2_DATASETS=<root>``. The objects
are four VOC classes, each a shape of its own colour on a textured background.

:func:`write_toy_wider_face` writes ``<root>/WIDER_FACE`` (``WIDER_{train,val}/images/<event>/*.jpg``,
``wider_face_split/wider_face_{train,val}_bbx_gt.txt``, ``eval_tools/ground_truth/*.mat``), so that
``wider_face_train`` / ``wider_face_val`` load and the official evaluation runs. Faces are bright ellipses
with two eyes and a mouth; the easy / medium / hard lists count faces of at least
:data:`WIDER_DIFFICULTY_MIN_SIZE` pixels (the official lists are made by a detector's recall, which falls
with face size); faces marked ``invalid`` are in no list, as in the official files.

Both are deterministic (a fixed seed): a second call writes the same files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

from .voc import voc_annotation_xml

__all__ = [
    "TOY_VOC_CLASSES",
    "WIDER_DIFFICULTY_MIN_SIZE",
    "write_toy_voc",
    "write_toy_wider_face",
]

# VOC class -> (shape, BGR colour) of its objects.
TOY_VOC_CLASSES: Dict[str, Tuple[str, Tuple[int, int, int]]] = {
    "car": ("rectangle", (40, 40, 220)),
    "person": ("ellipse", (60, 200, 60)),
    "bird": ("triangle", (220, 120, 30)),
    "tvmonitor": ("frame", (30, 210, 230)),
}
# (folder, split, number of images) of the toy VOC data set.
TOY_VOC_SPLITS = (("VOC2007", "trainval", 16), ("VOC2007", "test", 12), ("VOC2012", "trainval", 16))
# Smallest face side (pixels) counted by each official difficulty level of the toy WIDER FACE.
WIDER_DIFFICULTY_MIN_SIZE = {"easy": 48, "medium": 32, "hard": 0}
TOY_WIDER_EVENTS = ("0--Parade", "1--Handshaking", "2--Demonstration")
TOY_WIDER_IMAGES = {"train": 24, "val": 12}
_SEED = 2018


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 BGR array[height, width, 3]: smooth random blobs plus noise, so that flat colour is no cue."""
    small = rng.integers(60, 190, size=(max(height // 16, 2), max(width // 16, 2), 3)).astype(np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    image += rng.integers(-12, 13, size=image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def _free_box(
    rng: np.random.Generator, height: int, width: int, size: Tuple[int, int], taken: List[Tuple]
) -> Tuple[int, int, int, int] | None:
    """An (x1, y1, x2, y2) box of ``size`` (w, h) inside the image that overlaps no box in ``taken``
    (pixels, x2/y2 exclusive), or None after a few tries."""
    w, h = size
    for _ in range(20):
        x1, y1 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        box = (x1, y1, x1 + w, y1 + h)
        if all(box[2] <= t[0] or t[2] <= box[0] or box[3] <= t[1] or t[3] <= box[1] for t in taken):
            return box
    return None


def _draw_object(image: np.ndarray, shape: str, color: Tuple[int, int, int], box: Tuple) -> None:
    x1, y1, x2, y2 = box
    x2, y2 = x2 - 1, y2 - 1
    if shape == "rectangle":
        cv2.rectangle(image, (x1, y1), (x2, y2), color, -1)
    elif shape == "ellipse":
        center, axes = ((x1 + x2) // 2, (y1 + y2) // 2), ((x2 - x1) // 2, (y2 - y1) // 2)
        cv2.ellipse(image, center, axes, 0, 0, 360, color, -1, cv2.LINE_AA)
    elif shape == "triangle":
        points = np.array([[(x1 + x2) // 2, y1], [x2, y2], [x1, y2]], np.int32)
        cv2.fillPoly(image, [points], color, cv2.LINE_AA)
    elif shape == "frame":
        cv2.rectangle(image, (x1, y1), (x2, y2), color, -1)
        inset = max((x2 - x1) // 5, 2)
        cv2.rectangle(image, (x1 + inset, y1 + inset), (x2 - inset, y2 - inset), (20, 20, 20), -1)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def write_toy_voc(root: str | os.PathLike, image_size: Tuple[int, int] = (128, 160)) -> Path:
    """Write the toy VOC data set under ``root`` (see the module docstring) and return ``root``.

    ``image_size``: (height, width) of every image in pixels. Each image holds 1-3 objects of
    :data:`TOY_VOC_CLASSES`, 24-72 px, not overlapping; every 10th object of the test split is marked
    difficult (the VOC07 evaluation ignores it).
    """
    root = Path(root)
    height, width = image_size
    classes = list(TOY_VOC_CLASSES)
    first_id: Dict[str, int] = {}  # image ids are unique within a year folder, as in VOC
    for s, (folder, split, count) in enumerate(TOY_VOC_SPLITS):
        start = first_id.get(folder, 1)
        first_id[folder] = start + count
        base = root / folder
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        ids = []
        n_objects = 0
        for i in range(count):
            rng = np.random.default_rng([_SEED, s, i])
            image = _background(rng, height, width)
            objects, taken = [], []
            for _ in range(int(rng.integers(1, 4))):
                name = classes[int(rng.integers(len(classes)))]
                side = int(rng.integers(24, 73))
                aspect = float(rng.uniform(0.7, 1.4))
                size = (min(int(side * aspect), width), min(side, height))
                box = _free_box(rng, height, width, size, taken)
                if box is None:
                    continue
                taken.append(box)
                _draw_object(image, *TOY_VOC_CLASSES[name], box)
                n_objects += 1
                objects.append((name, box, int(split == "test" and n_objects % 10 == 0)))
            fileid = f"{folder[3:]}_{start + i:06d}"
            cv2.imwrite(str(base / "JPEGImages" / f"{fileid}.jpg"), image)
            _write_if_changed(
                base / "Annotations" / f"{fileid}.xml", voc_annotation_xml(fileid, height, width, objects)
            )
            ids.append(fileid)
        _write_if_changed(base / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    return root


def _draw_face(image: np.ndarray, box: Tuple, rng: np.random.Generator) -> None:
    """A face in ``box`` (x1, y1, x2, y2 exclusive): a bright ellipse, two dark eyes and a mouth."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    skin = tuple(int(v) for v in rng.integers(150, 240, size=3))
    center = (x1 + w // 2, y1 + h // 2)
    cv2.ellipse(image, center, (max(w // 2 - 1, 1), max(h // 2 - 1, 1)), 0, 0, 360, skin, -1, cv2.LINE_AA)
    eye = max(w // 10, 1)
    for ex in (x1 + w * 3 // 10, x1 + w * 7 // 10):
        cv2.circle(image, (ex, y1 + h * 2 // 5), eye, (30, 30, 30), -1, cv2.LINE_AA)
    mouth = (center[0], y1 + h * 7 // 10)
    cv2.ellipse(image, mouth, (max(w // 5, 1), max(h // 12, 1)), 0, 0, 180, (40, 40, 120), -1, cv2.LINE_AA)


def write_toy_wider_face(root: str | os.PathLike, image_size: Tuple[int, int] = (160, 192)) -> Path:
    """Write the toy WIDER FACE data set under ``<root>/WIDER_FACE`` (see the module docstring) and
    return that folder.

    ``image_size``: (height, width) in pixels. Each image holds 1-4 faces of 20-88 px (square-ish), not
    overlapping; every 7th face is ``invalid`` (kept out of training as a crowd box and out of every
    difficulty list). Images go round-robin into :data:`TOY_WIDER_EVENTS`.
    """
    from .wider_face import WIDER_FACE_DIRNAME, wider_face_paths
    from .wider_face_gt import WIDER_SETTINGS, WiderFaceGroundTruth, write_wider_face_gt

    base = Path(root) / WIDER_FACE_DIRNAME
    height, width = image_size
    n_faces = 0
    for s, (split, count) in enumerate(TOY_WIDER_IMAGES.items()):
        paths = wider_face_paths(root, split)
        lines: List[str] = []
        files: Dict[str, List[str]] = {e: [] for e in TOY_WIDER_EVENTS}
        boxes: Dict[str, List[np.ndarray]] = {e: [] for e in TOY_WIDER_EVENTS}
        counted: Dict[str, Dict[str, List[np.ndarray]]] = {
            k: {e: [] for e in TOY_WIDER_EVENTS} for k in WIDER_SETTINGS
        }
        for i in range(count):
            rng = np.random.default_rng([_SEED, 100 + s, i])
            event = TOY_WIDER_EVENTS[i % len(TOY_WIDER_EVENTS)]
            name = f"{event.split('--')[0]}_{event.split('--')[1]}_toy_{split}_{i}"
            image = _background(rng, height, width)
            faces, taken = [], []
            for _ in range(int(rng.integers(1, 5))):
                side = int(rng.integers(20, 89))
                size = (side, min(int(side * rng.uniform(1.0, 1.3)), height))
                box = _free_box(rng, height, width, size, taken)
                if box is None:
                    continue
                taken.append(box)
                _draw_face(image, box, rng)
                n_faces += 1
                faces.append((box, int(n_faces % 7 == 0)))
            path = Path(paths["image_root"]) / event / f"{name}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), image)
            lines += [f"{event}/{name}.jpg", str(len(faces))]
            # x1 y1 w h blur expression illumination invalid occlusion pose
            lines += [
                f"{b[0]} {b[1]} {b[2] - b[0]} {b[3] - b[1]} 0 0 0 {invalid} 0 0 " for b, invalid in faces
            ]
            if not faces:
                lines.append("0 0 0 0 0 0 0 0 0 0 ")
            files[event].append(name)
            xywh = np.array([[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b, _ in faces], np.float64)
            boxes[event].append(xywh.reshape(-1, 4))
            for level, min_size in WIDER_DIFFICULTY_MIN_SIZE.items():
                keep = [
                    k + 1
                    for k, (b, invalid) in enumerate(faces)
                    if not invalid and min(b[2] - b[0], b[3] - b[1]) >= min_size
                ]
                counted[level][event].append(np.array(keep, np.int64))
        _write_if_changed(Path(paths["annotation_file"]), "\n".join(lines) + "\n")
        if split == "val":
            gt = WiderFaceGroundTruth(
                list(TOY_WIDER_EVENTS),
                [files[e] for e in TOY_WIDER_EVENTS],
                [boxes[e] for e in TOY_WIDER_EVENTS],
                {k: [counted[k][e] for e in TOY_WIDER_EVENTS] for k in WIDER_SETTINGS},
            )
            write_wider_face_gt(paths["gt_dir"], gt)
    return base
