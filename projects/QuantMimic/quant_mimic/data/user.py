"""Your own data set from the command line: a COCO-format json + image folder, or a Pascal VOC folder.

Every command that reads data (``train_net.py``, ``python -m quant_mimic_tools.pipeline``, ``demo.py``)
takes the repeatable option::

    --dataset NAME=coco:JSON[:IMAGES]          COCO-format json; IMAGES: the folder its file_names are
                                               relative to (default: the json's own folder)
    --dataset NAME=voc:DIR:SPLIT[:CLASSES]     a VOC folder (DIR/Annotations/*.xml, DIR/JPEGImages/*.jpg,
                                               DIR/ImageSets/Main/SPLIT.txt); CLASSES: "cat,dog,..."
                                               (default: the sorted names found in the annotations of
                                               every VOC data set given on the same command line)

and registers NAME in detectron2's catalogs before the config is built, so ``DATASETS.TRAIN`` /
``DATASETS.TEST`` can name it; :func:`configure_classes` then sets ``MODEL.ROI_HEADS.NUM_CLASSES`` to its
number of classes unless the command line sets it. Nothing happens on import: registration is
:func:`register_user_datasets`, the checks before training are :func:`check_user_datasets` (json syntax
with line and column, missing fields and ids, image files missing, unreadable or of another size than
the annotation says, boxes of non-positive size or outside their image): each problem is one
:class:`~quant_mimic.errors.QuantMimicInputError` sentence naming the file and the image id.

COCO data sets are detectron2's ``register_coco_instances`` (``evaluator_type="coco"``, COCO AP); VOC data
sets use the checked VOC loader of :mod:`quant_mimic.data.voc` (``evaluator_type="pascal_voc"``, VOC AP:
the 11-point VOC2007 metric when DIR is named ``VOC2007``, else the area under the curve).

:func:`write_example_datasets` writes a small COCO and a small VOC data set of the built-in shapes, the
data of the worked example in ``datasets/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from ..errors import QuantMimicInputError
from .voc import load_voc_instances_checked

__all__ = [
    "DATASET_SPEC_HELP",
    "UserDataset",
    "add_dataset_argument",
    "check_user_dataset",
    "check_user_datasets",
    "configure_classes",
    "parse_dataset_spec",
    "register_user_datasets",
    "user_dataset",
    "voc_class_names",
    "write_example_datasets",
]

FORMATS = ("coco", "voc")
DATASET_SPEC_HELP = (
    "register a data set of your own as NAME before the config is read (repeatable): "
    "NAME=coco:JSON[:IMAGES] (COCO-format json and its image folder) or NAME=voc:DIR:SPLIT[:CLASS,CLASS,...] "
    "(a Pascal VOC folder); then name it in DATASETS.TRAIN / DATASETS.TEST (see datasets/README.md)"
)
_USAGE = "NAME=coco:JSON[:IMAGES] or NAME=voc:DIR:SPLIT[:CLASS,CLASS,...] (see datasets/README.md)"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
NUM_CLASSES_KEY = "MODEL.ROI_HEADS.NUM_CLASSES"
# A box may reach this many pixels past its image's border (rounding in annotation tools) before the
# check calls it outside the image.
BOX_TOLERANCE = 1.0
# Data sets with at most this many images have every image decoded by the check; larger ones have their
# headers read only (format and size), and a damaged image met during training is named by the loader.
FULL_DECODE_LIMIT = 2000


@dataclass(frozen=True)
class UserDataset:
    """One ``--dataset`` value. Paths are absolute.

    name: the registered name; format: "coco" or "voc"; path: the json file (coco) or the VOC folder;
    image_root: the image folder (VOC: ``path/JPEGImages``); split: the VOC image set ("" for coco);
    classes: the class names given on the command line (VOC only; None: read from the annotations).
    """

    name: str
    format: str
    path: str
    image_root: str
    split: str = ""
    classes: Tuple[str, ...] | None = None
    spec: str = field(default="", compare=False)  # the text it was parsed from

    def canonical(self) -> str:
        """The ``--dataset`` value of this data set with absolute paths (the same from any folder)."""
        if self.format == "coco":
            return f"{self.name}=coco:{self.path}:{self.image_root}"
        classes = f":{','.join(self.classes)}" if self.classes else ""
        return f"{self.name}=voc:{self.path}:{self.split}{classes}"


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def parse_dataset_spec(text: str) -> UserDataset:
    """``NAME=coco:JSON[:IMAGES]`` or ``NAME=voc:DIR:SPLIT[:CLASSES]`` -> :class:`UserDataset`.

    Only the syntax and the paths' existence are checked here; nothing is read."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    fmt, sep2, body = rest.partition(":")
    fmt = fmt.strip().lower()
    if not sep or not sep2 or not name or not body:
        raise QuantMimicInputError(f"--dataset {text!r} is not of the form {_USAGE}.")
    if not _NAME.match(name):
        raise QuantMimicInputError(
            f"--dataset {text!r}: the name {name!r} may hold only letters, digits, '_', '.' and '-': rename it."
        )
    if fmt not in FORMATS:
        raise QuantMimicInputError(
            f"--dataset {text!r}: format {fmt!r} is not one of {', '.join(FORMATS)}: write {_USAGE}."
        )
    if fmt == "coco":
        # JSON[:IMAGES]: split after ".json" so that the image folder may be left out
        match = re.match(r"^(.*?\.json)(?::(.*))?$", body, flags=re.IGNORECASE)
        if match is None:
            raise QuantMimicInputError(
                f"--dataset {text!r}: a COCO data set is NAME=coco:JSON[:IMAGES] with JSON a .json file, e.g. "
                f"{name}=coco:annotations/train.json:train_images (see datasets/README.md)."
            )
        json_file = _absolute(match.group(1))
        images = _absolute(match.group(2)) if match.group(2) else os.path.dirname(json_file)
        if not os.path.isfile(json_file):
            raise QuantMimicInputError(
                f"--dataset {name}: the COCO annotation file {json_file} does not exist: fix the path in "
                f"--dataset {name}=coco:JSON:IMAGES."
            )
        if not os.path.isdir(images):
            raise QuantMimicInputError(
                f"--dataset {name}: the image folder {images} does not exist: fix the path in "
                f"--dataset {name}=coco:JSON:IMAGES (the folder that the json's file_names are relative to)."
            )
        return UserDataset(name, "coco", json_file, images, spec=text)
    parts = body.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise QuantMimicInputError(
            f"--dataset {text!r}: a VOC data set is NAME=voc:DIR:SPLIT[:CLASS,CLASS,...], e.g. "
            f"{name}=voc:datasets/VOC2007:trainval (see datasets/README.md)."
        )
    dirname, split = _absolute(parts[0]), parts[1].strip()
    classes = None
    if len(parts) == 3:
        classes = tuple(c.strip() for c in parts[2].split(",") if c.strip())
        if not classes or len(set(classes)) != len(classes):
            raise QuantMimicInputError(
                f"--dataset {text!r}: the class list {parts[2]!r} is empty or repeats a name: give each class "
                "once, separated by commas."
            )
    if not os.path.isdir(dirname):
        raise QuantMimicInputError(
            f"--dataset {name}: the VOC folder {dirname} does not exist: fix the path in "
            f"--dataset {name}=voc:DIR:{split} (DIR holds Annotations/, ImageSets/Main/ and JPEGImages/)."
        )
    return UserDataset(name, "voc", dirname, os.path.join(dirname, "JPEGImages"), split, classes, spec=text)


# ---------------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------------

# name -> the UserDataset registered under it (by this module, in this process)
_REGISTERED: Dict[str, UserDataset] = {}


def user_dataset(name: str) -> UserDataset | None:
    """The :class:`UserDataset` registered as ``name`` by :func:`register_user_datasets`, or None."""
    return _REGISTERED.get(name)


def _load_json(path: str) -> Any:
    """The parsed json file; a syntax error becomes one sentence with its line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise QuantMimicInputError(
            f"The COCO annotation file {path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): "
            "fix the file there (a missing comma, quote or bracket) or export it again."
        ) from None
    except UnicodeDecodeError as e:
        raise QuantMimicInputError(
            f"The COCO annotation file {path} is not UTF-8 text (byte {e.start}): pass the .json file itself, "
            "exported again if needed."
        ) from None
    except OSError as e:
        raise QuantMimicInputError(
            f"The COCO annotation file {path} cannot be read ({e.strerror or e}): fix its permissions or path."
        ) from None


def _coco_categories(data: Any, path: str) -> Tuple[List[str], Dict[int, int]]:
    """(class names in category-id order, category id -> contiguous id), as detectron2's load_coco_json
    computes them."""
    cats = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(cats, list) or not cats:
        raise QuantMimicInputError(
            f"The COCO annotation file {path} has no 'categories' list (or an empty one): a COCO detection "
            'file lists its classes as \'categories\': [{"id": 1, "name": "cat"}, ...].'
        )
    ids = []
    for k, cat in enumerate(cats):
        if (
            not isinstance(cat, dict)
            or not isinstance(cat.get("id"), int)
            or not isinstance(cat.get("name"), str)
        ):
            raise QuantMimicInputError(
                f"The COCO annotation file {path} has category {k} = {json.dumps(cat)[:80]} without an integer "
                "'id' and a string 'name': give every category both."
            )
        ids.append(cat["id"])
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise QuantMimicInputError(
            f"The COCO annotation file {path} has two categories with id {dup}: give every category its own id."
        )
    names = [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
    return names, {cid: k for k, cid in enumerate(sorted(ids))}


def voc_class_names(dirname: str, split: str) -> List[str]:
    """The sorted ``<object><name>`` values in the annotations of the images of ``ImageSets/Main/<split>.txt``
    of the VOC folder ``dirname``."""
    from .voc import _read_image_set  # the checked reader of ImageSets/Main/<split>.txt

    names = set()
    for fileid in _read_image_set(dirname, split):
        anno = os.path.join(dirname, "Annotations", fileid + ".xml")
        try:
            root = ET.parse(anno).getroot()
        except FileNotFoundError:
            raise QuantMimicInputError(
                f"The VOC annotation {anno} does not exist although {split}.txt lists {fileid}: add it or "
                f"remove {fileid} from ImageSets/Main/{split}.txt."
            ) from None
        except ET.ParseError as e:
            raise QuantMimicInputError(
                f"The VOC annotation {anno} is not valid XML ({e}): fix the file there or export it again."
            ) from None
        for obj in root.findall("object"):
            name = obj.findtext("name")
            if name and name.strip():
                names.add(name.strip())
    return sorted(names)


def _voc_year(dirname: str) -> int:
    """2007 (11-point AP) for a folder named VOC2007, else 2012 (area under the PR curve)."""
    return 2007 if os.path.basename(os.path.normpath(dirname)) == "VOC2007" else 2012


def _register(ds: UserDataset, classes: Sequence[str]) -> None:
    if ds.name in DatasetCatalog.list():
        DatasetCatalog.remove(ds.name)
    if ds.name in MetadataCatalog.list():
        MetadataCatalog.remove(ds.name)
    extra = {"user_dataset": ds.spec}
    if ds.format == "coco":
        names, id_map = _coco_categories(_load_json(ds.path), ds.path)
        register_coco_instances(
            ds.name,
            {"thing_classes": names, "thing_dataset_id_to_contiguous_id": id_map, **extra},
            ds.path,
            ds.image_root,
        )
    else:
        DatasetCatalog.register(
            ds.name, lambda d=ds.path, s=ds.split, c=tuple(classes): load_voc_instances_checked(d, s, c)
        )
        MetadataCatalog.get(ds.name).set(
            thing_classes=list(classes),
            dirname=ds.path,
            year=_voc_year(ds.path),
            split=ds.split,
            evaluator_type="pascal_voc",
            **extra,
        )
    _REGISTERED[ds.name] = ds


def register_user_datasets(specs: Iterable[str | UserDataset]) -> List[UserDataset]:
    """Register every ``--dataset`` value of one command line (strings or parsed).

    A COCO data set's classes are its json's categories (read now); a VOC data set's classes are the
    ones given, else the sorted names found in the annotations of every VOC data set of ``specs`` given
    without classes (so that a train and a test split get the same list). A name that detectron2 or
    QuantMimic registered already is refused; calling this again with the same values does nothing.

    Returns:
        the parsed data sets, in order.
    """
    parsed = [s if isinstance(s, UserDataset) else parse_dataset_spec(s) for s in specs]
    names = [d.name for d in parsed]
    for ds in parsed:
        if names.count(ds.name) > 1:
            raise QuantMimicInputError(
                f"--dataset gives the name {ds.name!r} twice: give each data set its own name."
            )
        if ds.name in DatasetCatalog.list() and ds.name not in _REGISTERED:
            raise QuantMimicInputError(
                f"--dataset {ds.spec or ds.name}: {ds.name!r} is already a registered data set (built in): pick "
                "another NAME."
            )
    if all(_REGISTERED.get(d.name) == d for d in parsed):
        return parsed
    voc_names: List[str] | None = None
    for ds in parsed:
        classes: Sequence[str] = ()
        if ds.format == "voc":
            if ds.classes is not None:
                classes = ds.classes
            else:
                if voc_names is None:
                    found = set()
                    for other in parsed:
                        if other.format == "voc" and other.classes is None:
                            found.update(voc_class_names(other.path, other.split))
                    voc_names = sorted(found)
                if not voc_names:
                    raise QuantMimicInputError(
                        f"--dataset {ds.spec or ds.name}: the annotations of {ds.path} (split {ds.split}) hold no "
                        "<object><name>, so there are no classes: give them as "
                        f"{ds.name}=voc:DIR:{ds.split}:CLASS,CLASS,..."
                    )
                classes = voc_names
        _register(ds, classes)
    return parsed


# ---------------------------------------------------------------------------------------------------------
# Config: the number of classes
# ---------------------------------------------------------------------------------------------------------


def _overridden(opts: Sequence[str], key: str) -> bool:
    return key in list(opts)[::2]


def configure_classes(
    cfg: CfgNode, opts: Sequence[str] = (), datasets: Sequence[UserDataset] | None = None
) -> List[str]:
    """Set ``MODEL.ROI_HEADS.NUM_CLASSES`` (and ``MODEL.RETINANET.NUM_CLASSES``) to the number of classes of
    the user data sets in ``cfg.DATASETS`` (the first of DATASETS.TRAIN, else of DATASETS.TEST), unless
    ``opts`` (the command line's overrides) sets it. Every data set of DATASETS.TRAIN and DATASETS.TEST whose
    classes are known must have the same classes.

    Args:
        datasets: the data sets the command line registered (:func:`register_user_datasets`); if one is
            given, DATASETS.TRAIN or DATASETS.TEST must name one of them (else the override was forgotten).
            None: every data set registered by this module.

    Returns:
        the sentences to log (what was set and why).
    """
    used = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if datasets:
        given = [d.name for d in datasets]
        if not any(n in given for n in used):
            raise QuantMimicInputError(
                f"--dataset registers {', '.join(repr(n) for n in given)} but neither DATASETS.TRAIN nor "
                f"DATASETS.TEST names it: add DATASETS.TRAIN \"('{given[0]}',)\" (and DATASETS.TEST) to the "
                "command line's config overrides."
            )
    ours = [n for n in used if n in _REGISTERED]
    if not ours:
        return []
    known = [(n, MetadataCatalog.get(n).get("thing_classes", None)) for n in dict.fromkeys(used)]
    known = [(n, list(c)) for n, c in known if n in DatasetCatalog.list() and c]
    first_name, first = known[0]
    for name, classes in known[1:]:
        if classes != first:
            raise QuantMimicInputError(
                f"Data sets {first_name!r} ({len(first)} classes: {', '.join(first)}) and {name!r} ({len(classes)} "
                f"classes: {', '.join(classes)}) have different classes: train and test on data sets with the "
                "same class list (a VOC data set takes it after its split: NAME=voc:DIR:SPLIT:CLASS,CLASS,...)."
            )
    source = next((n for n in cfg.DATASETS.TRAIN if n in _REGISTERED), ours[0])
    classes = list(MetadataCatalog.get(source).thing_classes)
    shown = ", ".join(classes[:10]) + (f", ... ({len(classes)} in all)" if len(classes) > 10 else "")
    if _overridden(opts, NUM_CLASSES_KEY):
        n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        if n < len(classes):
            raise QuantMimicInputError(
                f"{NUM_CLASSES_KEY} {n} is less than the {len(classes)} classes of {source!r} ({shown}): drop the "
                f"override (it is set from the data) or pass {len(classes)}."
            )
        return [
            f"{NUM_CLASSES_KEY} is {n} as the command line sets it; {source!r} has {len(classes)} classes ({shown})."
        ]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(classes)
    cfg.MODEL.RETINANET.NUM_CLASSES = len(classes)
    return [
        f"{NUM_CLASSES_KEY} set to {len(classes)}, the classes of {source!r} ({shown}); pass "
        f"{NUM_CLASSES_KEY} N on the command line to override."
    ]


# ---------------------------------------------------------------------------------------------------------
# Checks before training
# ---------------------------------------------------------------------------------------------------------


def _numbers(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def _check_image(
    path: str, image_id: Any, width: int, height: int, source: str, decode: bool, voc_set: str = ""
) -> None:
    """``path`` exists, is an image PIL reads (every pixel when ``decode``) and is ``width`` x ``height``
    after its EXIF orientation (as detectron2's read_image sees it). ``source``: the annotation file that
    gives the size; ``voc_set``: the VOC image set that lists the image (COCO: "")."""
    from PIL import Image

    where = f"image id {image_id} in {source}"
    remove = f"remove {image_id} from {voc_set}" if voc_set else f"remove the image from {source}"
    if not os.path.isfile(path):
        fix = "" if voc_set else f", fix its file_name in {source},"
        raise QuantMimicInputError(
            f"The image {path} ({where}) does not exist: put the file there{fix} or {remove}."
        )
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
            if decode:
                im.load()
    except Exception as e:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, ... for bad files)
        reason = " ".join(str(e).split()) or type(e).__name__
        raise QuantMimicInputError(
            f"The image {path} ({where}) cannot be read ({reason}): replace it with an intact copy or {remove}."
        ) from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: detectron2 reads it transposed
        w, h = h, w
    if (w, h) != (width, height):
        raise QuantMimicInputError(
            f"The image {path} ({where}) is {w}x{h} pixels but {source} says {width}x{height} (width x height): fix "
            f"the {'<size>' if voc_set else 'width and height'} there (detectron2 stops on the mismatch)."
        )


def _check_box_inside(
    x0: float, y0: float, x1: float, y1: float, width: int, height: int
) -> Tuple[bool, bool]:
    """(non-positive size, outside the image by more than BOX_TOLERANCE pixels) of an XYXY box."""
    empty = not (x1 > x0 and y1 > y0)
    t = BOX_TOLERANCE
    outside = x0 < -t or y0 < -t or x1 > width + t or y1 > height + t
    return empty, outside


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise QuantMimicInputError(message)


def _check_coco(ds: UserDataset, for_training: bool, for_evaluation: bool, decode: bool | None) -> str:
    path = ds.path
    data = _load_json(path)
    _require(isinstance(data, dict), f"The COCO annotation file {path} is not a JSON object: a COCO file is "
             "{\"images\": [...], \"annotations\": [...], \"categories\": [...]}.")  # fmt: skip
    for key in ("images", "annotations"):
        _require(
            isinstance(data.get(key), list),
            f"The COCO annotation file {path} has no {key!r} list: a COCO detection file has 'images', "
            "'annotations' and 'categories'.",
        )
    _, id_map = _coco_categories(data, path)
    images: Dict[Any, Dict[str, Any]] = {}
    for k, img in enumerate(data["images"]):
        _require(
            isinstance(img, dict) and "id" in img,
            f"The COCO annotation file {path} has image entry {k} without an 'id': give every image an id.",
        )
        iid = img["id"]
        _require(iid not in images, f"The COCO annotation file {path} has two images with id {iid}: give every "
                 "image its own id.")  # fmt: skip
        for key in ("file_name", "width", "height"):
            _require(key in img, f"The COCO annotation file {path} has image id {iid} without {key!r}: add it "
                     "(detectron2 reads file_name, width and height of every image).")  # fmt: skip
        _require(
            isinstance(img["width"], int)
            and isinstance(img["height"], int)
            and img["width"] > 0
            and img["height"] > 0,
            f"The COCO annotation file {path} has image id {iid} ({img['file_name']}) of size "
            f"{img['width']!r}x{img['height']!r}: width and height are positive integers (pixels).",
        )
        images[iid] = img
    _require(bool(images), f"The COCO annotation file {path} lists no images: export the data set again.")
    ann_ids = set()
    for k, ann in enumerate(data["annotations"]):
        _require(
            isinstance(ann, dict) and "id" in ann,
            f"The COCO annotation file {path} has annotation entry {k} without an 'id': give every annotation a "
            "unique id.",
        )
        aid = ann["id"]
        _require(aid not in ann_ids, f"The COCO annotation file {path} has two annotations with id {aid}: give "
                 "every annotation its own id.")  # fmt: skip
        ann_ids.add(aid)
        iid = ann.get("image_id")
        _require(iid in images, f"The COCO annotation file {path} has annotation {aid} with image_id {iid!r}, "
                 "which is not in 'images': fix the image_id or add the image.")  # fmt: skip
        img = images[iid]
        what = f"annotation {aid} of image id {iid} ({img['file_name']})"
        _require(ann.get("category_id") in id_map, f"The COCO annotation file {path} has {what} with category_id "
                 f"{ann.get('category_id')!r}, which is not in 'categories': fix it or add the category.")  # fmt: skip
        box = ann.get("bbox")
        _require(
            isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box),
            f"The COCO annotation file {path} has {what} without a 'bbox' of four numbers [x, y, width, height]: "
            "add the box.",
        )
        x, y, w, h = box
        empty, outside = _check_box_inside(x, y, x + w, y + h, img["width"], img["height"])
        _require(not empty, f"The COCO annotation file {path} has {what} with bbox {_numbers(box)} of "
                 "non-positive width or height (COCO boxes are [x, y, width, height]): fix the box or remove "
                 "the annotation.")  # fmt: skip
        _require(
            not outside,
            f"The COCO annotation file {path} has {what} with bbox {_numbers(box)}, which reaches outside its "
            f"{img['width']}x{img['height']} image: COCO boxes are [x, y, width, height] in pixels (not [x1, y1, "
            "x2, y2]); fix the box or remove the annotation.",
        )
        if for_evaluation:
            _require(
                isinstance(ann.get("area"), (int, float)),
                f"The COCO annotation file {path} has {what} without an 'area', which the COCO evaluation reads: "
                "add it (the box's width x height).",
            )
    if for_training:
        _require(bool(ann_ids), f"The COCO annotation file {path} has no annotations, so there is nothing to "
                 "train on: pass the annotated json.")  # fmt: skip
    full = len(images) <= FULL_DECODE_LIMIT if decode is None else decode
    for iid, img in images.items():
        file_name = os.path.join(ds.image_root, img["file_name"])
        _check_image(file_name, iid, img["width"], img["height"], path, full)
    return (
        f"Data set {ds.name!r} checked: {path}, {len(images)} images"
        f"{' (decoded)' if full else ' (headers)'} in {ds.image_root}, {len(ann_ids)} boxes."
    )


def _check_voc(ds: UserDataset, for_training: bool, for_evaluation: bool, decode: bool | None) -> str:
    classes = MetadataCatalog.get(ds.name).thing_classes if ds.name in _REGISTERED else ds.classes
    dicts = load_voc_instances_checked(ds.path, ds.split, classes, check_eval_fields=for_evaluation)
    full = len(dicts) <= FULL_DECODE_LIMIT if decode is None else decode
    n_boxes = 0
    for d in dicts:
        anno = os.path.join(ds.path, "Annotations", f"{d['image_id']}.xml")
        for k, obj in enumerate(d["annotations"], start=1):
            x0, y0, x1, y1 = obj["bbox"]  # detectron2's: xmin - 1, ymin - 1, xmax, ymax
            corners = _numbers([x0 + 1, y0 + 1, x1, y1])
            cls = classes[obj["category_id"]]
            # a 1-pixel box has xmin == xmax in VOC's 1-based inclusive corners
            empty, outside = _check_box_inside(x0, y0, x1, y1, d["width"], d["height"])
            _require(not empty, f"The VOC annotation {anno} (image id {d['image_id']}) has object {k} ({cls}) with "
                     f"(xmin, ymin, xmax, ymax) = {corners}, a box of non-positive size: fix the box (xmax >= xmin, "
                     "ymax >= ymin) or remove the object.")  # fmt: skip
            _require(
                not outside,
                f"The VOC annotation {anno} (image id {d['image_id']}) has object {k} ({cls}) with (xmin, ymin, xmax, "
                f"ymax) = {corners}, outside its {d['width']}x{d['height']} image (<size>): VOC corners are pixels "
                "from 1 to width / height; fix the box or the <size>.",
            )
            n_boxes += 1
    if for_training:
        _require(n_boxes > 0, f"The VOC data set {ds.path} (split {ds.split}) has no objects, so there is nothing "
                 "to train on: pass an annotated split.")  # fmt: skip
    for d in dicts:
        anno = os.path.join(ds.path, "Annotations", f"{d['image_id']}.xml")
        image_set = os.path.join(ds.path, "ImageSets", "Main", f"{ds.split}.txt")
        _check_image(d["file_name"], d["image_id"], d["width"], d["height"], anno, full, image_set)
    return (
        f"Data set {ds.name!r} checked: {ds.path} split {ds.split}, {len(dicts)} images"
        f"{' (decoded)' if full else ' (headers)'}, {n_boxes} boxes, classes {', '.join(classes)}."
    )


def check_user_dataset(
    ds: UserDataset | str, for_training: bool = True, for_evaluation: bool = True, decode: bool | None = None
) -> str:
    """Check one user data set before it is used; raises :class:`QuantMimicInputError` (one sentence naming
    the file and the image id) at the first problem.

    COCO: the json parses (else line and column), has ``images`` / ``annotations`` / ``categories`` with ids,
    sizes and unique ids, every annotation names a known image and category and has a box of positive size
    inside its image (``BOX_TOLERANCE`` pixels of slack); VOC: every XML file of the split has what the
    loader reads, and every box has positive size and lies inside ``<size>``. Both: every image exists, is
    readable and has the size the annotation gives. ``for_training``: at least one box;
    ``for_evaluation``: what the evaluation reads as well (COCO ``area``; VOC ``difficult``, ``truncated``,
    ``pose`` and integer corners).

    Args:
        decode: decode every image (None: when the data set has at most ``FULL_DECODE_LIMIT`` images,
            else read the headers only).

    Returns:
        one sentence saying what was checked.
    """
    if isinstance(ds, str):
        found = user_dataset(ds)
        if found is None:
            raise KeyError(f"{ds!r} was not registered by register_user_datasets")
        ds = found
    check = _check_coco if ds.format == "coco" else _check_voc
    return check(ds, for_training, for_evaluation, decode)


def check_user_datasets(cfg: CfgNode, eval_only: bool = False) -> List[str]:
    """Check the user data sets that ``cfg`` trains on (DATASETS.TRAIN, unless ``eval_only``) and
    evaluates on (DATASETS.TEST). Returns the sentences to log."""
    train = [] if eval_only else list(cfg.DATASETS.TRAIN)
    test = list(cfg.DATASETS.TEST)
    notes = []
    for name in dict.fromkeys(train + test):
        if name in _REGISTERED:
            notes.append(check_user_dataset(name, for_training=name in train, for_evaluation=name in test))
    return notes


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def add_dataset_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the repeatable ``--dataset NAME=FORMAT:...`` option (``args.dataset``: a list of strings)."""
    parser.add_argument(
        "--dataset", action="append", default=[], metavar="NAME=FORMAT:PATH...", help=DATASET_SPEC_HELP
    )
    return parser


def misplaced_dataset_option(opts: Sequence[str]) -> None:
    """A ``--dataset`` after the config overrides ends up among them: say where it goes."""
    if "--dataset" in opts or any(str(o).startswith("--dataset=") for o in opts):
        raise QuantMimicInputError(
            "--dataset comes after the config overrides (KEY VALUE pairs), where it is read as one: put every "
            "--dataset before them."
        )


# ---------------------------------------------------------------------------------------------------------
# The worked example's data: the built-in shapes as a COCO and a VOC data set
# ---------------------------------------------------------------------------------------------------------


def _example_spec(num_train: int, num_val: int, image_size: int):
    from .shapes import ShapesSpec

    return ShapesSpec(
        num_train=num_train,
        num_val=num_val,
        num_test=0,
        image_size=image_size,
        min_objects=1,
        max_objects=4,
        min_object_size=10,
        small_object_size=16,
        max_object_size=min(48, image_size),
        clutter=3,
    )


def _voc_xml(fileid: str, size: int, objects: List[Dict[str, Any]], class_names: Sequence[str]) -> str:
    parts = [
        f"<annotation><folder>VOCshapes</folder><filename>{fileid}.jpg</filename>",
        f"<size><width>{size}</width><height>{size}</height><depth>3</depth></size>",
    ]
    for obj in objects:
        x, y, w, h = obj["bbox"]  # pixels, [x, y, w, h] of the visible extent
        parts.append(
            f"<object><name>{class_names[obj['category_id'] - 1]}</name><pose>Unspecified</pose>"
            "<truncated>0</truncated><difficult>0</difficult>"
            f"<bndbox><xmin>{x + 1}</xmin><ymin>{y + 1}</ymin><xmax>{x + w}</xmax><ymax>{y + h}</ymax></bndbox>"
            "</object>"
        )
    return "".join(parts) + "</annotation>\n"


def write_example_datasets(
    folder: str | os.PathLike, num_train: int = 24, num_val: int = 8, image_size: int = 96
) -> Dict[str, Path]:
    """Write the worked example's data sets of ``datasets/README.md`` into ``folder`` (deterministic):

    - ``coco/train/*.png``, ``coco/val/*.png``, ``coco/annotations/{train,val}.json`` (COCO format);
    - ``VOCshapes/{Annotations,JPEGImages,ImageSets/Main/{train,val}.txt}`` (Pascal VOC layout, JPEG),

    ``num_train`` + ``num_val`` images of ``image_size`` px, 1-4 objects of the five shape classes each
    (the built-in renderer, :func:`quant_mimic.data.render_image`). Returns the paths by role.
    """
    import cv2
    import numpy as np

    from .shapes import SHAPE_CLASSES, SPLITS, generate_split, render_image

    splits = ("train", "val")

    root = Path(folder)
    spec = _example_spec(num_train, num_val, image_size)
    coco = root / "coco"
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    for split in splits:
        data = generate_split(coco, split, spec)
        (coco / "annotations" / f"{split}.json").write_text(json.dumps(data, indent=1) + "\n")
    voc = root / "VOCshapes"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for split in splits:
        s, ids = SPLITS.index(split), []
        for i in range(spec.num_images(split)):
            rng = np.random.default_rng(np.random.SeedSequence([spec.seed, s, i]))  # the COCO set's images
            image, objects = render_image(rng, spec)
            fileid = f"{split}_{i:06d}"
            cv2.imwrite(str(voc / "JPEGImages" / f"{fileid}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            (voc / "Annotations" / f"{fileid}.xml").write_text(
                _voc_xml(fileid, image_size, objects, SHAPE_CLASSES)
            )
            ids.append(fileid)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return {
        "coco_train_json": coco / "annotations" / "train.json",
        "coco_train_images": coco / "train",
        "coco_val_json": coco / "annotations" / "val.json",
        "coco_val_images": coco / "val",
        "voc": voc,
    }
