"""The checks of a user data set before training or evaluation: json and XML fields, ids, image files (present,
readable, of the annotated size) and boxes (positive size, inside their image), each problem one
:class:`~quant_mimic.errors.QuantMimicInputError` sentence naming the file and the image id."""

from __future__ import annotations

import os
from typing import Any, Dict, Sequence, Tuple

from detectron2.data import MetadataCatalog

from ..errors import QuantMimicInputError
from .user_spec import UserDataset, coco_categories, load_coco_json
from .voc import load_voc_instances_checked

# A box may reach this many pixels past its image's border (rounding in annotation tools) before the
# check calls it outside the image.
BOX_TOLERANCE = 1.0
# Data sets with at most this many images have every image decoded by the check; larger ones have their
# headers read only (format and size), and a damaged image met during training is named by the loader.
FULL_DECODE_LIMIT = 2000


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
    data = load_coco_json(path)
    _require(isinstance(data, dict), f"The COCO annotation file {path} is not a JSON object: a COCO file is "
             "{\"images\": [...], \"annotations\": [...], \"categories\": [...]}.")  # fmt: skip
    for key in ("images", "annotations"):
        _require(
            isinstance(data.get(key), list),
            f"The COCO annotation file {path} has no {key!r} list: a COCO detection file has 'images', "
            "'annotations' and 'categories'.",
        )
    _, id_map = coco_categories(data, path)
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
    from .user import user_dataset  # the registry (user.py imports this module)

    classes = MetadataCatalog.get(ds.name).thing_classes if user_dataset(ds.name) is not None else ds.classes
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
        from .user import user_dataset  # the registry (user.py imports this module)

        found = user_dataset(ds)
        if found is None:
            raise KeyError(f"{ds!r} was not registered by register_user_datasets")
        ds = found
    check = _check_coco if ds.format == "coco" else _check_voc
    return check(ds, for_training, for_evaluation, decode)
