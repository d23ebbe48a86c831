"""Tests of the built-in QuantMimic shapes data set: generator, caching, registration."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from pycocotools.coco import COCO

from quant_mimic.data import (
    SHAPE_CLASSES,
    ShapesSpec,
    ensure_dataset_generated,
    ensure_shapes_generated,
    generate_shapes_dataset,
    register_shapes_datasets,
)
from quant_mimic.data.shapes import visible_objects

SMALL = ShapesSpec(seed=7, num_train=12, num_val=6, num_test=4)


def _json_bytes(out: Path, split: str) -> bytes:
    return (out / "annotations" / f"instances_{split}.json").read_bytes()


def _images(out: Path, split: str) -> list[np.ndarray]:
    files = sorted((out / split).glob("*.png"))
    return [cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files]


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*"))}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes_dataset(tmp_path_factory.mktemp("shapes_a"), SMALL)


@pytest.fixture(scope="module")
def sample_coco(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A moderately sized sample (80 images) for class and size coverage."""
    out = generate_shapes_dataset(
        tmp_path_factory.mktemp("shapes_sample"), ShapesSpec(num_train=80, num_val=0, num_test=0)
    )
    return json.loads(_json_bytes(out, "train"))


def test_layout_and_counts(small_dataset: Path) -> None:
    assert small_dataset.name == "quantmimic_shapes"
    assert json.loads((small_dataset / "spec.json").read_text()) == SMALL.to_dict()
    for split, n in (("train", SMALL.num_train), ("val", SMALL.num_val), ("test", SMALL.num_test)):
        assert sorted(p.name for p in (small_dataset / split).iterdir()) == [f"{i:06d}.png" for i in range(n)]
        for img in _images(small_dataset, split):
            assert img.shape == (SMALL.image_size, SMALL.image_size, 3) and img.dtype == np.uint8
        coco = json.loads(_json_bytes(small_dataset, split))
        assert [im["file_name"] for im in coco["images"]] == [f"{i:06d}.png" for i in range(n)]
    # nothing but the data set is left in the root (no temporary directories)
    assert [p.name for p in small_dataset.parent.iterdir()] == ["quantmimic_shapes"]


def test_same_seed_is_identical(small_dataset: Path, tmp_path: Path) -> None:
    again = generate_shapes_dataset(tmp_path, SMALL)
    assert again != small_dataset
    for split in ("train", "val", "test"):
        assert _json_bytes(again, split) == _json_bytes(small_dataset, split)
        a, b = _images(small_dataset, split), _images(again, split)
        assert len(a) == len(b) > 0
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert (again / "spec.json").read_bytes() == (small_dataset / "spec.json").read_bytes()


def test_different_seed_differs(small_dataset: Path, tmp_path: Path) -> None:
    other = generate_shapes_dataset(tmp_path, ShapesSpec(seed=8, num_train=12, num_val=6, num_test=4))
    for split in ("train", "val"):
        assert _json_bytes(other, split) != _json_bytes(small_dataset, split)
        a, b = _images(small_dataset, split), _images(other, split)
        assert not any(np.array_equal(x, y) for x, y in zip(a, b))


def test_train_val_and_test_use_different_seeds(small_dataset: Path) -> None:
    splits = {split: _images(small_dataset, split) for split in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not any(np.array_equal(x, y) for x in splits[a] for y in splits[b]), (a, b)


def test_the_test_split_leaves_train_and_val_as_they_were(small_dataset: Path, tmp_path: Path) -> None:
    """Train and val do not depend on the test split's size: results measured before it existed hold."""
    without = generate_shapes_dataset(tmp_path, replace(SMALL, num_test=0))
    assert not list((without / "test").glob("*.png"))
    for split in ("train", "val"):
        assert _json_bytes(without, split) == _json_bytes(small_dataset, split)
        assert all(
            np.array_equal(x, y) for x, y in zip(_images(without, split), _images(small_dataset, split))
        )


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_valid_coco_with_boxes_inside_images(small_dataset: Path, split: str) -> None:
    coco = COCO(str(small_dataset / "annotations" / f"instances_{split}.json"))
    assert sorted(coco.getCatIds()) == [1, 2, 3, 4, 5]
    assert [coco.cats[i]["name"] for i in range(1, 6)] == list(SHAPE_CLASSES)
    assert len(coco.getImgIds()) == SMALL.num_images(split)
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= SMALL.num_images(split)  # at least ~1 visible object per image on average
    assert len({a["id"] for a in anns}) == len(anns)
    for a in anns:
        img = coco.imgs[a["image_id"]]
        assert (img["width"], img["height"]) == (SMALL.image_size, SMALL.image_size)
        x, y, w, h = a["bbox"]
        assert all(isinstance(v, int) for v in (x, y, w, h))
        assert w >= 1 and h >= 1
        assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
        assert a["area"] == w * h
        assert a["iscrowd"] == 0
        assert a["category_id"] in coco.cats
    per_image = np.bincount([a["image_id"] for a in anns], minlength=len(coco.imgs) + 1)[1:]
    assert per_image.max() <= SMALL.max_objects


def test_all_classes_and_sizes_occur(sample_coco: dict) -> None:
    anns = sample_coco["annotations"]
    counts = np.bincount([a["category_id"] for a in anns], minlength=6)[1:]
    assert (counts >= 0.1 * len(anns)).all(), counts  # every class, none rare
    sides = np.array([max(a["bbox"][2], a["bbox"][3]) for a in anns])
    assert (sides < 16).any() and (sides > 64).any()
    assert 20 <= np.median(sides) <= 70
    assert sides.min() >= 4 and sides.max() <= 110
    n_objects = np.bincount([a["image_id"] for a in anns], minlength=len(sample_coco["images"]) + 1)[1:]
    assert n_objects.min() >= 1 and n_objects.max() <= 8 and 3 <= n_objects.mean() <= 7


def test_visible_objects_drops_hidden_and_tightens_boxes() -> None:
    def rect(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        m = np.zeros((50, 50), bool)
        m[y0:y1, x0:x1] = True
        return m

    below = rect(10, 10, 30, 30)  # 20 x 20, drawn first
    # 30 % hidden by a later object: kept, box shrinks to the visible 14 x 20 strip
    objs = visible_objects([below, rect(24, 0, 50, 50)], [1, 2], 0.6)
    assert objs == [
        {"category_id": 1, "bbox": [10, 10, 14, 20], "area": 280},
        {"category_id": 2, "bbox": [24, 0, 26, 50], "area": 1300},
    ]
    # 70 % hidden: dropped; the top object is always kept in full
    objs = visible_objects([below, rect(16, 0, 50, 50)], [1, 2], 0.6)
    assert objs == [{"category_id": 2, "bbox": [16, 0, 34, 50], "area": 1700}]
    # fully hidden and order matters: the later object is on top
    assert visible_objects([rect(0, 0, 5, 5), rect(0, 0, 50, 50)], [3, 4]) == [
        {"category_id": 4, "bbox": [0, 0, 50, 50], "area": 2500}
    ]
    assert visible_objects([], []) == []


def test_cached_call_does_not_rewrite(small_dataset: Path) -> None:
    before = _mtimes(small_dataset)
    assert generate_shapes_dataset(small_dataset.parent, SMALL) == small_dataset
    assert _mtimes(small_dataset) == before


def test_changed_spec_regenerates(tmp_path: Path) -> None:
    out = generate_shapes_dataset(tmp_path, SMALL)
    old_json = _json_bytes(out, "train")
    changed = ShapesSpec(seed=7, num_train=5, num_val=3, num_test=2, clutter=2)
    assert generate_shapes_dataset(tmp_path, changed) == out
    assert json.loads((out / "spec.json").read_text()) == changed.to_dict()
    assert len(list((out / "train").glob("*.png"))) == 5
    assert len(list((out / "val").glob("*.png"))) == 3
    assert len(json.loads(_json_bytes(out, "train"))["images"]) == 5
    assert _json_bytes(out, "train") != old_json
    assert [p.name for p in tmp_path.iterdir()] == ["quantmimic_shapes"]


def test_partial_dataset_is_replaced(tmp_path: Path) -> None:
    partial = tmp_path / "quantmimic_shapes"
    (partial / "train").mkdir(parents=True)
    (partial / "train" / "junk.png").write_bytes(b"not an image")
    out = generate_shapes_dataset(tmp_path, SMALL)
    assert out == partial
    assert not (out / "train" / "junk.png").exists()
    assert json.loads((out / "spec.json").read_text()) == SMALL.to_dict()


def test_concurrent_generation(small_dataset: Path, tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        outs = list(pool.map(lambda _: generate_shapes_dataset(tmp_path, SMALL), range(3)))
    assert outs == [tmp_path / "quantmimic_shapes"] * 3
    assert [p.name for p in tmp_path.iterdir()] == ["quantmimic_shapes"]
    for split in ("train", "val"):
        assert _json_bytes(outs[0], split) == _json_bytes(small_dataset, split)
        assert len(_images(outs[0], split)) == SMALL.num_images(split)


def test_spec_round_trip_and_validation() -> None:
    assert ShapesSpec.from_dict(SMALL.to_dict()) == SMALL
    defaults = ShapesSpec()
    assert (defaults.num_train, defaults.num_val, defaults.num_test, defaults.image_size) == (
        800,
        200,
        1000,
        192,
    )
    assert (defaults.min_objects, defaults.max_objects) == (2, 8)
    with pytest.raises(TypeError):
        ShapesSpec.from_dict({**SMALL.to_dict(), "unknown": 1})
    with pytest.raises(ValueError):
        ShapesSpec(min_objects=5, max_objects=2)
    with pytest.raises(ValueError):
        ShapesSpec(max_object_size=300)


def test_builtin_names_registered_at_import() -> None:
    for split in ("train", "val", "test"):
        name = f"quantmimic_shapes_{split}"
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "coco" and meta.generated is True
        assert meta.thing_classes == list(SHAPE_CLASSES)
        assert Path(meta.json_file).parts[-3:] == (
            "quantmimic_shapes",
            "annotations",
            f"instances_{split}.json",
        )
        assert Path(meta.image_root).parts[-2:] == ("quantmimic_shapes", split)


def test_registration_and_loading(tmp_path: Path) -> None:
    prefix = f"test_shapes_{uuid.uuid4().hex[:8]}"
    names = register_shapes_datasets(tmp_path, SMALL, prefix=prefix)
    try:
        assert names == [f"{prefix}_train", f"{prefix}_val", f"{prefix}_test"]
        assert register_shapes_datasets(tmp_path, SMALL, prefix=prefix) == []  # already registered
        meta = MetadataCatalog.get(f"{prefix}_val")
        assert meta.thing_classes == list(SHAPE_CLASSES) and len(meta.thing_classes) == 5
        assert len(meta.thing_colors) == 5 and all(len(c) == 3 for c in meta.thing_colors)
        assert meta.evaluator_type == "coco" and meta.generated is True
        assert meta.json_file == str(tmp_path / "quantmimic_shapes" / "annotations" / "instances_val.json")
        assert not Path(meta.json_file).exists()  # generated on first use only

        dicts = DatasetCatalog.get(f"{prefix}_train")
        assert Path(meta.json_file).is_file()
        assert len(dicts) == SMALL.num_train
        n_anns = 0
        for d in dicts:
            assert {"file_name", "height", "width", "image_id", "annotations"} <= set(d)
            assert Path(d["file_name"]).is_file() and (d["height"], d["width"]) == (192, 192)
            for a in d["annotations"]:
                assert {"bbox", "bbox_mode", "category_id", "iscrowd"} <= set(a)
                assert a["bbox_mode"] == BoxMode.XYWH_ABS and 0 <= a["category_id"] < 5
                n_anns += 1
        coco = json.loads(_json_bytes(tmp_path / "quantmimic_shapes", "train"))
        assert n_anns == len(coco["annotations"])
        assert len(DatasetCatalog.get(f"{prefix}_val")) == SMALL.num_val
        assert ensure_dataset_generated(f"{prefix}_val") == tmp_path / "quantmimic_shapes"
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    assert f"{prefix}_train" not in DatasetCatalog.list()


def test_ensure_generated_allows_coco_evaluator(tmp_path: Path) -> None:
    from detectron2.evaluation import COCOEvaluator

    prefix = f"test_shapes_{uuid.uuid4().hex[:8]}"
    names = register_shapes_datasets(tmp_path, SMALL, prefix=prefix)
    try:
        out = ensure_shapes_generated(tmp_path, SMALL)
        assert out == tmp_path / "quantmimic_shapes" and (out / "spec.json").is_file()
        evaluator = COCOEvaluator(f"{prefix}_val", output_dir=None)
        assert len(evaluator._coco_api.getImgIds()) == SMALL.num_val
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
