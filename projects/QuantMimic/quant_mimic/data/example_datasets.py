"""The worked example's data (``datasets/README.md``): the built-in shapes written as a COCO and a Pascal VOC
data set."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict

from .voc import voc_annotation_xml


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
            boxes = [  # COCO [x, y, w, h] of the visible extent, in pixels
                (SHAPE_CLASSES[o["category_id"] - 1], (x, y, x + w, y + h), 0)
                for o in objects
                for x, y, w, h in [o["bbox"]]
            ]
            xml = voc_annotation_xml(fileid, image_size, image_size, boxes, folder="VOCshapes")
            (voc / "Annotations" / f"{fileid}.xml").write_text(xml)
            ids.append(fileid)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return {
        "coco_train_json": coco / "annotations" / "train.json",
        "coco_train_images": coco / "train",
        "coco_val_json": coco / "annotations" / "val.json",
        "coco_val_images": coco / "val",
        "voc": voc,
    }
