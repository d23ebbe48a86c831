"""A data set of your own as the ``--dataset`` option names it: the value parsed into a :class:`UserDataset`,
and its annotation files read (COCO json and categories, VOC class names). Registration is :mod:`.user`."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

from ..errors import QuantMimicInputError
from .voc import read_image_set

FORMATS = ("coco", "voc")
DATASET_SPEC_HELP = (
    "register a data set of your own as NAME before the config is read (repeatable): "
    "NAME=coco:JSON[:IMAGES] (COCO-format json and its image folder) or NAME=voc:DIR:SPLIT[:CLASS,CLASS,...] "
    "(a Pascal VOC folder); then name it in DATASETS.TRAIN / DATASETS.TEST (see datasets/README.md)"
)
_USAGE = "NAME=coco:JSON[:IMAGES] or NAME=voc:DIR:SPLIT[:CLASS,CLASS,...] (see datasets/README.md)"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


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


def load_coco_json(path: str) -> Any:
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


def coco_categories(data: Any, path: str) -> Tuple[List[str], Dict[int, int]]:
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
    names = set()
    for fileid in read_image_set(dirname, split):
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
