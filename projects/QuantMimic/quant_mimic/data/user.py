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
:func:`register_user_datasets`; the checks of one data set are :func:`check_user_dataset`, which
``quant_mimic.engine.checks`` calls before a run for each one the run uses (json syntax with line and
column, missing fields and ids, image files missing, unreadable or of another size than the annotation
says, boxes of non-positive size or outside their image): each problem is one
:class:`~quant_mimic.errors.QuantMimicInputError` sentence naming the file and the image id.

COCO data sets are detectron2's ``register_coco_instances`` (``evaluator_type="coco"``, COCO AP); VOC data
sets use the checked VOC loader of :mod:`quant_mimic.data.voc` (``evaluator_type="pascal_voc"``, VOC AP:
the 11-point VOC2007 metric when DIR is named ``VOC2007``, else the area under the curve).

:func:`write_example_datasets` writes a small COCO and a small VOC data set of the built-in shapes, the
data of the worked example in ``datasets/README.md``.

This module registers and configures; the ``--dataset`` value and the annotation files are read by
:mod:`.user_spec`, the checks are :mod:`.user_checks`, the example's data :mod:`.example_datasets`.
"""

from __future__ import annotations

import argparse
import os
from typing import Dict, Iterable, List, Sequence

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from ..errors import QuantMimicInputError
from .example_datasets import write_example_datasets
from .user_checks import check_user_dataset
from .user_spec import (
    DATASET_SPEC_HELP,
    UserDataset,
    coco_categories,
    load_coco_json,
    parse_dataset_spec,
    voc_class_names,
)
from .voc import load_voc_instances_checked

__all__ = [
    "DATASET_SPEC_HELP",
    "UserDataset",
    "add_dataset_argument",
    "check_user_dataset",
    "configure_classes",
    "parse_dataset_spec",
    "register_user_datasets",
    "user_dataset",
    "voc_class_names",
    "write_example_datasets",
]

NUM_CLASSES_KEY = "MODEL.ROI_HEADS.NUM_CLASSES"

# ---------------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------------

# name -> the UserDataset registered under it (by this module, in this process)
_REGISTERED: Dict[str, UserDataset] = {}


def user_dataset(name: str) -> UserDataset | None:
    """The :class:`UserDataset` registered as ``name`` by :func:`register_user_datasets`, or None."""
    return _REGISTERED.get(name)


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
        names, id_map = coco_categories(load_coco_json(ds.path), ds.path)
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
