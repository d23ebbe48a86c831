"""Pascal VOC with checked annotations: the paper's Faster R-CNN setting (VOC 2007+2012 trainval, 2007 test).

detectron2 registers ``voc_{2007,2012}_{trainval,train,val}`` and ``voc_2007_test`` from
``$DETECTRON2_DATASETS`` (``VOC2007/`` and ``VOC2012/``, each with ``Annotations``, ``ImageSets/Main`` and
``JPEGImages``) when ``detectron2.data`` is imported. Its loader stops with an opaque ``AttributeError``
(``'NoneType' object has no attribute 'text'``) when an XML file lacks a field. :func:`register_checked_voc`
re-registers the same names with :func:`load_voc_instances_checked`, which first checks every XML file and
raises :class:`~quant_mimic.errors.QuantMimicInputError` naming the file and the missing field, then returns
exactly what detectron2's ``load_voc_instances`` returns. Training on 2007+2012 is
``DATASETS.TRAIN = ("voc_2007_trainval", "voc_2012_trainval")``: detectron2 concatenates the two.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.pascal_voc import CLASS_NAMES, load_voc_instances

from ..errors import QuantMimicInputError

__all__ = [
    "VOC_CLASS_NAMES",
    "VOC_SPLITS",
    "load_voc_instances_checked",
    "read_image_set",
    "register_checked_voc",
    "voc_annotation_xml",
]

VOC_CLASS_NAMES = tuple(CLASS_NAMES)
# (name, folder under the data sets root, split): detectron2's own table (detectron2/data/datasets/builtin.py).
VOC_SPLITS = (
    ("voc_2007_trainval", "VOC2007", "trainval"),
    ("voc_2007_train", "VOC2007", "train"),
    ("voc_2007_val", "VOC2007", "val"),
    ("voc_2007_test", "VOC2007", "test"),
    ("voc_2012_trainval", "VOC2012", "trainval"),
    ("voc_2012_train", "VOC2012", "train"),
    ("voc_2012_val", "VOC2012", "val"),
)
_COORDS = ("xmin", "ymin", "xmax", "ymax")
# What detectron2's PascalVOCDetectionEvaluator reads from each <object> besides name and bndbox.
_EVAL_FIELDS = ("difficult", "truncated", "pose")
_FIX_XML = "restore the file (for VOC itself: from the official VOCtrainval/VOCtest tar)"


def _text(elem: ET.Element | None) -> str | None:
    if elem is None or elem.text is None or not elem.text.strip():
        return None
    return elem.text.strip()


def _check_number(value: str, kind: type, anno_file: str, field: str) -> None:
    try:
        kind(value)
    except ValueError:
        raise QuantMimicInputError(
            f"The VOC annotation {anno_file} has {field} = {value!r}, which is not "
            f"{'an integer' if kind is int else 'a number'}: {_FIX_XML}."
        ) from None


def _check_voc_xml(anno_file: str, class_names: Sequence[str], check_eval_fields: bool) -> None:
    """Raise QuantMimicInputError (file + field) if ``anno_file`` lacks something the loader or evaluator reads."""
    try:
        root = ET.parse(anno_file).getroot()
    except FileNotFoundError:
        raise QuantMimicInputError(
            f"The VOC annotation {anno_file} does not exist although its image set lists it: {_FIX_XML}."
        ) from None
    except ET.ParseError as e:
        raise QuantMimicInputError(
            f"The VOC annotation {anno_file} is not valid XML ({e}): {_FIX_XML}."
        ) from None
    for field in ("width", "height"):
        value = _text(root.find(f"./size/{field}"))
        if value is None:
            raise QuantMimicInputError(
                f"The VOC annotation {anno_file} has no <size><{field}>: add the image's {field} in pixels "
                f"or {_FIX_XML}."
            )
        _check_number(value, int, anno_file, f"<size><{field}>")
    for k, obj in enumerate(root.findall("object"), start=1):
        where = f"object {k}"
        name = _text(obj.find("name"))
        if name is None:
            raise QuantMimicInputError(
                f"The VOC annotation {anno_file} has no <name> in its {where}: add the class name or {_FIX_XML}."
            )
        if name not in class_names:
            raise QuantMimicInputError(
                f"The VOC annotation {anno_file} has class {name!r} in its {where}, which is not one of the "
                f"{len(class_names)} classes {tuple(class_names)}: fix the name or {_FIX_XML}."
            )
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise QuantMimicInputError(
                f"The VOC annotation {anno_file} has no <bndbox> in its {where} ({name}): add the box or "
                f"{_FIX_XML}."
            )
        # (parent, tag, how the message names it, why it is read, number type; None: text)
        fields = [(bndbox, c, f"<bndbox><{c}>", "", int if check_eval_fields else float) for c in _COORDS]
        if check_eval_fields:  # detectron2's loader reads the corners with float(), its evaluator with int()
            why = ", which the Pascal VOC evaluation reads"
            fields += [(obj, f, f"<{f}>", why, None if f == "pose" else int) for f in _EVAL_FIELDS]
        for parent, tag, label, why, kind in fields:
            value = _text(parent.find(tag))
            if value is None:
                raise QuantMimicInputError(
                    f"The VOC annotation {anno_file} has no {label} in its {where} ({name}){why}: add it or "
                    f"{_FIX_XML}."
                )
            if kind is not None:
                _check_number(value, kind, anno_file, f"<{tag}> of its {where}")


def read_image_set(dirname: str, split: str) -> List[str]:
    """The image ids of ``dirname/ImageSets/Main/<split>.txt``, one a line; a missing file or a line of
    several columns is a :class:`QuantMimicInputError` sentence."""
    path = os.path.join(dirname, "ImageSets", "Main", split + ".txt")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise QuantMimicInputError(
            f"The VOC image set {path} does not exist: extract the official VOC tar so that {dirname} holds "
            "Annotations/, ImageSets/ and JPEGImages/ (see datasets/README.md)."
        ) from None
    ids = []
    for k, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 1:
            raise QuantMimicInputError(
                f"{path} line {k} has {len(tokens)} columns where an image set has one image id per line: "
                "use the ImageSets/Main/<split>.txt of the official release, not a per-class list."
            )
        ids.append(tokens[0])
    if len(ids) == 1:
        raise QuantMimicInputError(
            f"{path} lists a single image, which detectron2's VOC loader cannot read (numpy returns a 0-d "
            "array): list at least two images."
        )
    return ids


def load_voc_instances_checked(
    dirname: str,
    split: str,
    class_names: Sequence[str] = VOC_CLASS_NAMES,
    check_eval_fields: bool | None = None,
) -> List[Dict[str, Any]]:
    """detectron2's ``load_voc_instances(dirname, split, class_names)`` after checking every XML file.

    Args:
        dirname: a VOC year folder holding ``Annotations``, ``ImageSets/Main`` and ``JPEGImages``.
        split: the image set, e.g. "trainval" or "test" (``ImageSets/Main/<split>.txt``).
        class_names: the class names; every ``<object><name>`` must be one of them.
        check_eval_fields: also require what ``PascalVOCDetectionEvaluator`` reads (``<difficult>``,
            ``<truncated>``, ``<pose>``, integer box corners). Default: only for the "test" split, the
            one that is evaluated (VOC 2012 is not required to carry them).

    Returns:
        exactly ``load_voc_instances(dirname, split, class_names)``: dicts with ``file_name``, ``image_id``,
        ``height``/``width`` (pixels) and ``annotations`` (``bbox`` XYXY_ABS in pixels, 0-based corners,
        ``category_id``); difficult objects are included, as detectron2 does.

    Raises:
        QuantMimicInputError: one sentence naming the file and the missing or bad field, and the fix.
    """
    if check_eval_fields is None:
        check_eval_fields = split == "test"
    class_names = list(class_names)
    annotation_dir = os.path.join(dirname, "Annotations")
    for fileid in read_image_set(dirname, split):
        _check_voc_xml(os.path.join(annotation_dir, fileid + ".xml"), class_names, check_eval_fields)
    return load_voc_instances(dirname, split, class_names)


def register_checked_voc(root: str | os.PathLike) -> List[str]:
    """Re-register detectron2's VOC names (``voc_2007_trainval`` ... ``voc_2007_test``) with the checked loader.

    Each name's DatasetCatalog entry is replaced by :func:`load_voc_instances_checked` on
    ``<root>/VOC{year}``; its MetadataCatalog metadata (``thing_classes``, ``dirname``, ``year``, ``split``,
    ``evaluator_type="pascal_voc"``, anything else set on it) is kept, with ``dirname`` moved to ``root`` if
    it differs. Lazy: nothing is read here, so an absent folder is fine until the data set is fetched.

    Returns:
        the names registered.
    """
    root = os.fspath(root)
    names = []
    for name, folder, split in VOC_SPLITS:
        dirname = os.path.join(root, folder)
        year = 2007 if "2007" in name else 2012
        old = MetadataCatalog.get(name).as_dict() if name in MetadataCatalog.list() else {}
        old.pop("name", None)
        class_names = list(old.get("thing_classes", VOC_CLASS_NAMES))
        meta = {**old, "thing_classes": class_names, "dirname": dirname, "year": year, "split": split}
        meta.setdefault("evaluator_type", "pascal_voc")
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if old != meta:
            if name in MetadataCatalog.list():
                MetadataCatalog.remove(name)
            MetadataCatalog.get(name).set(**meta)
        DatasetCatalog.register(
            name,
            lambda d=dirname, s=split, c=tuple(class_names): load_voc_instances_checked(d, s, c),
        )
        names.append(name)
    return names


def voc_annotation_xml(
    fileid: str,
    height: int,
    width: int,
    objects: Sequence[Tuple[str, Tuple[int, int, int, int], int]],
    folder: str = "VOC",
) -> str:
    """The Pascal VOC annotation (``Annotations/<fileid>.xml``) of one ``height`` x ``width`` image of
    ``JPEGImages/<fileid>.jpg``; ``objects``: (class name, (x1, y1, x2, y2) pixels with x2 and y2
    exclusive, difficult 0 or 1). VOC corners are 1-based and inclusive: written x1 + 1, y1 + 1, x2, y2."""
    parts = [
        f"<annotation><folder>{folder}</folder><filename>{fileid}.jpg</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size><segmented>0</segmented>",
    ]
    for name, (x1, y1, x2, y2), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>\n"
