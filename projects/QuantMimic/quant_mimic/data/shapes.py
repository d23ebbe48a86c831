"""QuantMimic shapes: a deterministic, seeded generator of a small COCO-format detection data set,
and its on-disk cache.

Every image is ``image_size x image_size`` RGB (written as PNG) and holds ``min_objects`` to
``max_objects`` objects of five classes that differ in both shape and texture. The parts:

- :mod:`.shapes_spec`: :class:`ShapesSpec` (every parameter) and the classes;
- :mod:`.shapes_draw`: backgrounds, clutter, shape masks, textures, object colours;
- :mod:`.shapes_layout`: object placement and the annotation of what remains visible
  (:func:`render_image`, :func:`visible_objects`);
- this module: the splits written to disk, cached by spec.

Layout written by :func:`generate_shapes_dataset` under ``<root>/quantmimic_shapes/``::

    train/000000.png ...            val/000000.png ...            test/000000.png ...
    annotations/instances_train.json
    annotations/instances_val.json
    annotations/instances_test.json
    spec.json                        # the ShapesSpec, written last; marks a complete data set
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict

import cv2
import numpy as np

from .shapes_layout import render_image, visible_objects
from .shapes_spec import DEFAULT_SPEC, SHAPE_CLASSES, SHAPE_TEXTURES, SPLITS, ShapesSpec

__all__ = [
    "DATASET_DIRNAME",
    "DEFAULT_SPEC",
    "SHAPE_CLASSES",
    "SHAPE_TEXTURES",
    "SPLITS",
    "ShapesSpec",
    "dataset_dir",
    "generate_shapes_dataset",
    "generate_split",
    "render_image",
    "visible_objects",
]

DATASET_DIRNAME = "quantmimic_shapes"


def _split_rng(spec: ShapesSpec, split: str, index: int) -> np.random.Generator:
    """Independent generator for image ``index`` of ``split``; each split has its own seed."""
    return np.random.default_rng(np.random.SeedSequence([spec.seed, SPLITS.index(split), index]))


def generate_split(out_dir: str | Path, split: str, spec: ShapesSpec) -> Dict[str, Any]:
    """Write the PNG images of ``split`` into ``out_dir/<split>/`` and return its COCO dict.

    Image ``i`` is ``<split>/{i:06d}.png`` with COCO image id ``i + 1``; annotation ids run from 1.
    """
    out = Path(out_dir) / split
    out.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(spec.num_images(split)):
        image, objects = render_image(_split_rng(spec, split, i), spec)
        file_name = f"{i:06d}.png"
        if not cv2.imwrite(str(out / file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {out / file_name}")
        images.append(
            {"id": i + 1, "file_name": file_name, "width": spec.image_size, "height": spec.image_size}
        )
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0, **obj})
    return {
        "info": {"description": "QuantMimic shapes", "version": str(spec.version), "split": split},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPE_CLASSES)
        ],
    }


def _spec_json(spec: ShapesSpec) -> str:
    return json.dumps(spec.to_dict(), indent=2) + "\n"


def _read_spec(path: Path) -> Dict[str, Any] | None:
    """The spec dict stored in ``path/spec.json``, or None if it is missing or unreadable."""
    try:
        with open(path / "spec.json", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def dataset_dir(root: str | Path) -> Path:
    """``<root>/quantmimic_shapes``: where :func:`generate_shapes_dataset` puts the data set."""
    return Path(root) / DATASET_DIRNAME


def generate_shapes_dataset(root: str | Path, spec: ShapesSpec = DEFAULT_SPEC) -> Path:
    """Generate the data set into ``<root>/quantmimic_shapes/`` unless it is already there.

    Cached: returns at once if ``spec.json`` there equals ``spec``; otherwise (re)generates. The
    data set is written into a temporary sibling directory and renamed into place, so the final
    path never holds a partial data set, and concurrent callers are safe: whoever finishes
    second keeps the finished data set if it has the same spec.

    Returns:
        the data set directory ``<root>/quantmimic_shapes``.
    """
    root = Path(root)
    final = dataset_dir(root)
    if _read_spec(final) == spec.to_dict():
        return final

    root.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = root / f".{DATASET_DIRNAME}.tmp-{tag}"
    try:
        (tmp / "annotations").mkdir(parents=True)
        for split in SPLITS:
            coco = generate_split(tmp, split, spec)
            with open(tmp / "annotations" / f"instances_{split}.json", "w", encoding="utf-8") as f:
                json.dump(coco, f, separators=(",", ":"))
        with open(tmp / "spec.json", "w", encoding="utf-8") as f:  # last: marks it complete
            f.write(_spec_json(spec))

        for _ in range(10):
            if _read_spec(final) == spec.to_dict():
                return final  # another process finished the same data set meanwhile
            try:
                os.rename(tmp, final)  # atomic; fails if `final` exists and is not empty
                return final
            except OSError:
                if not final.exists():
                    raise
            # `final` holds another spec (or a partial copy made by hand): move it aside, retry
            old = root / f".{DATASET_DIRNAME}.old-{tag}-{uuid.uuid4().hex[:4]}"
            try:
                os.rename(final, old)
            except FileNotFoundError:
                continue
            shutil.rmtree(old, ignore_errors=True)
        raise RuntimeError(f"could not move the generated data set into place at {final}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
