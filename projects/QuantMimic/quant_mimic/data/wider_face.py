"""WIDER FACE (Yang et al., CVPR 2016) in detectron2's catalogs: the paper's R-FCN face-detection setting.

The official release is expected under ``<root>/WIDER_FACE/``::

    WIDER_train/images/<event>/<image>.jpg
    WIDER_val/images/<event>/<image>.jpg
    wider_face_split/wider_face_train_bbx_gt.txt, wider_face_val_bbx_gt.txt
    eval_tools/ground_truth/wider_face_val.mat, wider_easy_val.mat, wider_medium_val.mat, wider_hard_val.mat

The annotation file ``wider_face_{split}_bbx_gt.txt`` repeats, per image::

    <event>/<image>.jpg                 # path relative to WIDER_{split}/images/
    <n>                                 # number of faces
    x1 y1 w h blur expression illumination invalid occlusion pose    # n lines (pixels, integers)

An image with ``n == 0`` is followed by one line of ten zeros.

Faces that are kept out of training (decided here, following the official evaluation, whose easy / medium /
hard ground-truth lists never count an invalid face, and the common WIDER FACE training pipelines):

* ``invalid == 1`` faces with a positive size are kept with ``iscrowd = 1``: detectron2's ``DatasetMapper``
  drops crowd annotations from training, and ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` drops an image whose
  faces are all crowd, so they never become positives; they stay in the dicts for visualisation.
* faces with ``w <= 0`` or ``h <= 0`` (a handful of the official boxes) are not regions at all and are
  dropped.

Malformed input raises :class:`~quant_mimic.errors.QuantMimicInputError` with one sentence that names the
file, the 1-based line number and the fix.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, NamedTuple, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..errors import QuantMimicInputError

__all__ = [
    "WIDER_FACE_CLASSES",
    "WIDER_FACE_DIRNAME",
    "WiderFace",
    "WiderImage",
    "load_wider_face",
    "parse_wider_face_gt",
    "register_wider_face",
    "wider_face_paths",
]

logger = logging.getLogger(__name__)

WIDER_FACE_CLASSES = ["face"]
WIDER_FACE_DIRNAME = "WIDER_FACE"
WIDER_FACE_SPLITS = ("train", "val")
# The ten integers of one face line, in the official order.
FACE_FIELDS = ("x1", "y1", "w", "h", "blur", "expression", "illumination", "invalid", "occlusion", "pose")
_FIX = "re-extract wider_face_split.zip from the official WIDER FACE release"


class WiderFace(NamedTuple):
    """One face line: box ``x1, y1, w, h`` in pixels, and the six attribute integers."""

    x1: int
    y1: int
    w: int
    h: int
    blur: int
    expression: int
    illumination: int
    invalid: int
    occlusion: int
    pose: int


class WiderImage(NamedTuple):
    """One image record: its path relative to ``WIDER_{split}/images``, the 1-based line of that path in
    the annotation file, and all its face lines as written (nothing filtered)."""

    path: str
    line: int
    faces: Tuple[WiderFace, ...]


def wider_face_paths(root: str | os.PathLike, split: str) -> Dict[str, str]:
    """The official paths of ``split`` ("train" or "val") under ``<root>/WIDER_FACE``.

    Returns:
        dict with ``image_root`` (``WIDER_{split}/images``), ``annotation_file``
        (``wider_face_split/wider_face_{split}_bbx_gt.txt``) and ``gt_dir`` (``eval_tools/ground_truth``,
        the official evaluation's .mat files; they exist for the val split only).
    """
    if split not in WIDER_FACE_SPLITS:
        raise ValueError(f"WIDER FACE split must be one of {WIDER_FACE_SPLITS}, got {split!r}")
    base = os.path.join(os.fspath(root), WIDER_FACE_DIRNAME)
    return {
        "image_root": os.path.join(base, f"WIDER_{split}", "images"),
        "annotation_file": os.path.join(base, "wider_face_split", f"wider_face_{split}_bbx_gt.txt"),
        "gt_dir": os.path.join(base, "eval_tools", "ground_truth"),
    }


def _parse_ints(text: str, path: str, line_no: int, what: str) -> List[int]:
    try:
        return [int(v) for v in text.split()]
    except ValueError:
        raise QuantMimicInputError(
            f"{path} line {line_no}: expected {what} but found {text.strip()!r}; {_FIX}."
        ) from None


def parse_wider_face_gt(path: str | os.PathLike) -> List[WiderImage]:
    """Parse an official ``wider_face_{train,val}_bbx_gt.txt`` file, keeping every face line.

    Args:
        path: the annotation file.

    Returns:
        one :class:`WiderImage` per image record, in file order; an image with 0 faces has ``faces == ()``
        (its line of ten zeros is consumed and checked).

    Raises:
        QuantMimicInputError: the file is missing, or a line is truncated / not integers, a face count does
            not match the face lines that follow, or the file ends inside a record. The message names the
            file and the 1-based line number.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw_lines = f.read().splitlines()
    except FileNotFoundError:
        raise QuantMimicInputError(
            f"The WIDER FACE annotation file {path} does not exist: download wider_face_split.zip from the "
            "official WIDER FACE page and extract it into the WIDER_FACE folder (see datasets/README.md)."
        ) from None
    lines = []
    for k, raw in enumerate(raw_lines):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise QuantMimicInputError(f"{path} line {k + 1} is not text; {_FIX}.") from None

    images: List[WiderImage] = []
    i, n_lines = 0, len(lines)
    while i < n_lines:
        name = lines[i].strip()
        if not name:  # blank lines between records (e.g. at the end of the file) are harmless
            i += 1
            continue
        name_line = i + 1
        if not name.lower().endswith((".jpg", ".jpeg", ".png")):
            raise QuantMimicInputError(
                f"{path} line {name_line}: expected an image path like '0--Parade/0_Parade_x.jpg' but found "
                f"{name!r} (a face count that does not match its face lines?); {_FIX}."
            )
        if i + 1 >= n_lines:
            raise QuantMimicInputError(
                f"{path} ends at line {name_line}, right after the image path {name!r}, without its face count; "
                f"{_FIX}."
            )
        count_vals = _parse_ints(lines[i + 1], path, i + 2, f"the face count of {name}")
        if len(count_vals) != 1 or count_vals[0] < 0:
            raise QuantMimicInputError(
                f"{path} line {i + 2}: expected one non-negative face count for {name} but found "
                f"{lines[i + 1].strip()!r}; {_FIX}."
            )
        count = count_vals[0]
        n_face_lines = max(count, 1)  # 0 faces: one line of ten zeros follows
        faces: List[WiderFace] = []
        for k in range(n_face_lines):
            j = i + 2 + k
            if j >= n_lines:
                raise QuantMimicInputError(
                    f"{path} ends at line {n_lines} inside the record of {name} (line {name_line}), which "
                    f"announces {count} face(s) but has only {k} face line(s); {_FIX}."
                )
            text = lines[j]
            if text.strip().lower().endswith((".jpg", ".jpeg", ".png")):
                raise QuantMimicInputError(
                    f"{path} line {j + 1}: the face count {count} of {name} (line {i + 2}) does not match its "
                    f"{k} face line(s) before the next image path; {_FIX}."
                )
            vals = _parse_ints(
                text,
                path,
                j + 1,
                "ten integers 'x1 y1 w h blur expression illumination invalid occlusion pose'",
            )
            if len(vals) != len(FACE_FIELDS):
                raise QuantMimicInputError(
                    f"{path} line {j + 1}: expected ten integers 'x1 y1 w h blur expression illumination "
                    f"invalid occlusion pose' but found {len(vals)} (truncated line?); {_FIX}."
                )
            if count == 0:
                if any(vals):
                    raise QuantMimicInputError(
                        f"{path} line {j + 1}: {name} has face count 0, so this line must be ten zeros; {_FIX}."
                    )
            else:
                faces.append(WiderFace(*vals))
        images.append(WiderImage(name, name_line, tuple(faces)))
        i += 2 + n_face_lines
    return images


def _image_size(file_name: str, ann_file: str, line: int) -> Tuple[int, int]:
    """(height, width) in pixels from the image header (PIL reads no pixel data here)."""
    from PIL import Image

    try:
        with Image.open(file_name) as im:
            width, height = im.size
    except FileNotFoundError:
        raise QuantMimicInputError(
            f"The image {file_name} listed on line {line} of {ann_file} does not exist: extract "
            "WIDER_train.zip / WIDER_val.zip into the WIDER_FACE folder (see datasets/README.md)."
        ) from None
    except OSError as e:
        raise QuantMimicInputError(
            f"The image {file_name} listed on line {line} of {ann_file} cannot be read ({e}): replace it "
            "with the file from the official release."
        ) from None
    return height, width


def load_wider_face(
    annotation_file: str | os.PathLike, image_root: str | os.PathLike, read_image_sizes: bool = True
) -> List[Dict[str, Any]]:
    """Load an official WIDER FACE annotation file as detectron2 dataset dicts.

    Args:
        annotation_file: ``wider_face_{split}_bbx_gt.txt``.
        image_root: ``WIDER_{split}/images``; the file's paths are relative to it.
        read_image_sizes: read ``height`` / ``width`` from each image's header (PIL, no decoding). When
            False they are left out and detectron2's mapper fills them in when it reads the image.

    Returns:
        one dict per image: ``file_name``, ``image_id`` (``"<event>/<image stem>"``), ``height`` and
        ``width`` (pixels), ``annotations``: list of ``{"bbox": [x1, y1, w, h] (pixels, BoxMode.XYWH_ABS),
        "bbox_mode", "category_id": 0, "iscrowd": 0 or 1 (invalid faces)}``; boxes with ``w <= 0`` or
        ``h <= 0`` are dropped (see the module docstring).
    """
    annotation_file = os.fspath(annotation_file)
    image_root = os.fspath(image_root)
    dicts = []
    dropped = 0
    for record in parse_wider_face_gt(annotation_file):
        file_name = os.path.join(image_root, record.path)
        annotations = []
        for face in record.faces:
            if face.w <= 0 or face.h <= 0:
                dropped += 1
                continue
            annotations.append(
                {
                    "bbox": [float(face.x1), float(face.y1), float(face.w), float(face.h)],
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "category_id": 0,
                    "iscrowd": int(face.invalid == 1),
                }
            )
        d: Dict[str, Any] = {
            "file_name": file_name,
            "image_id": os.path.splitext(record.path)[0].replace(os.sep, "/"),
        }
        if read_image_sizes:
            d["height"], d["width"] = _image_size(file_name, annotation_file, record.line)
        d["annotations"] = annotations
        dicts.append(d)
    if dropped:
        logger.info(f"{annotation_file}: dropped {dropped} face box(es) with zero or negative size.")
    return dicts


def register_wider_face(root: str | os.PathLike, prefix: str = "wider_face") -> None:
    """Register ``<prefix>_train`` and ``<prefix>_val`` from ``<root>/WIDER_FACE`` (lazily).

    Nothing is read here, so this works when the folder is absent; the files are read when the data set is
    fetched (``DatasetCatalog.get``), and a missing file then raises ``QuantMimicInputError``. Names that are
    already registered are replaced (catalog entry and metadata), so calling this again with another root
    moves them.

    Metadata: ``thing_classes=["face"]``, ``evaluator_type="wider_face"``, ``image_root``,
    ``annotation_file``, ``dataset_root`` and, for the val split (the only one the official tools have
    ground truth for), ``gt_dir``, the folder of ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``.
    """
    root_abs = os.path.abspath(os.path.expanduser(os.fspath(root)))
    for split in WIDER_FACE_SPLITS:
        name = f"{prefix}_{split}"
        paths = wider_face_paths(root_abs, split)
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        DatasetCatalog.register(
            name,
            lambda ann=paths["annotation_file"], img=paths["image_root"]: load_wider_face(ann, img),
        )
        meta = {
            "thing_classes": list(WIDER_FACE_CLASSES),
            "evaluator_type": "wider_face",
            "image_root": paths["image_root"],
            "annotation_file": paths["annotation_file"],
            "dataset_root": os.path.join(root_abs, WIDER_FACE_DIRNAME),
        }
        if split == "val":
            meta["gt_dir"] = paths["gt_dir"]
        MetadataCatalog.get(name).set(**meta)
