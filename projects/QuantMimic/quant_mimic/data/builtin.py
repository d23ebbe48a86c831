"""Registration of the built-in QuantMimic shapes data set in detectron2's catalogs.

``quantmimic_shapes_train``, ``quantmimic_shapes_val`` (where choices are made) and
``quantmimic_shapes_test`` (read once per final model) are registered when
:mod:`quant_mimic.data` is imported. The data set is generated on first use (loading the
dataset dicts); since detectron2's ``COCOEvaluator`` opens ``metadata.json_file`` when it is
constructed, run :func:`ensure_shapes_generated` (or :func:`ensure_dataset_generated`) before
building evaluators.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .shapes import DEFAULT_SPEC, SHAPE_CLASSES, SPLITS, ShapesSpec, dataset_dir, generate_shapes_dataset

__all__ = [
    "SHAPES_DATASET_PREFIX",
    "SHAPE_COLORS",
    "default_datasets_root",
    "ensure_dataset_generated",
    "ensure_shapes_generated",
    "register_shapes_datasets",
]

SHAPES_DATASET_PREFIX = "quantmimic_shapes"
# One RGB colour per class in SHAPE_CLASSES order, for visualisation only.
SHAPE_COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def default_datasets_root() -> str:
    """detectron2's convention: ``$DETECTRON2_DATASETS``, else ``datasets`` (relative to the cwd)."""
    return os.environ.get("DETECTRON2_DATASETS", "datasets")


def _resolve_root(root: str | Path | None) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(default_datasets_root() if root is None else root))))


def ensure_shapes_generated(root: str | Path | None = None, spec: ShapesSpec = DEFAULT_SPEC) -> Path:
    """Generate the shapes data set under ``root`` (default :func:`default_datasets_root`) if it
    is missing or was generated with another spec. Returns ``<root>/quantmimic_shapes``."""
    return generate_shapes_dataset(_resolve_root(root), spec)


def ensure_dataset_generated(dataset_name: str) -> Path:
    """Generate the files of a registered shapes data set (any root/spec it was registered
    with). Returns its ``<root>/quantmimic_shapes`` directory."""
    meta = MetadataCatalog.get(dataset_name)
    if not getattr(meta, "generated", False):
        raise KeyError(f"{dataset_name!r} is not a registered generated shapes data set")
    return generate_shapes_dataset(meta.dataset_root, ShapesSpec.from_dict(dict(meta.shapes_spec)))


def _load(root: Path, spec: ShapesSpec, split: str, name: str) -> List[Dict[str, Any]]:
    out = generate_shapes_dataset(root, spec)
    return load_coco_json(str(out / "annotations" / f"instances_{split}.json"), str(out / split), name)


def register_shapes_datasets(
    root: str | Path | None = None,
    spec: ShapesSpec = DEFAULT_SPEC,
    prefix: str = SHAPES_DATASET_PREFIX,
) -> List[str]:
    """Register ``<prefix>_train``, ``<prefix>_val`` and ``<prefix>_test`` in DatasetCatalog and
    MetadataCatalog.

    Nothing is generated here: the loader generates the data set under ``root`` (default
    :func:`default_datasets_root`, made absolute now) on first use. Names that are already
    registered are skipped.

    Returns:
        the names registered by this call.
    """
    root_path = _resolve_root(root)
    out = dataset_dir(root_path)
    registered = []
    for split in SPLITS:
        name = f"{prefix}_{split}"
        if name in DatasetCatalog.list():
            continue
        DatasetCatalog.register(
            name, lambda root=root_path, spec=spec, split=split, name=name: _load(root, spec, split, name)
        )
        MetadataCatalog.get(name).set(
            thing_classes=list(SHAPE_CLASSES),
            thing_colors=list(SHAPE_COLORS),
            thing_dataset_id_to_contiguous_id={k + 1: k for k in range(len(SHAPE_CLASSES))},
            evaluator_type="coco",
            json_file=str(out / "annotations" / f"instances_{split}.json"),
            image_root=str(out / split),
            generated=True,
            dataset_root=str(root_path),
            shapes_spec=spec.to_dict(),
        )
        registered.append(name)
    return registered
