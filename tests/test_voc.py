"""Pascal VOC: the checked loader on fixtures in the official format, its error messages, the re-registration
of detectron2's VOC names, and detectron2's PascalVOCDetectionEvaluator against a hand-calculated AP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_voc_instances, register_pascal_voc
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.structures import Boxes, Instances

from quant_mimic.data.voc import VOC_SPLITS, load_voc_instances_checked, register_checked_voc
from quant_mimic.errors import QuantMimicInputError

CLASSES = ("cat", "dog")


def obj_xml(name, box, difficult=0, drop=()):
    """One <object>; ``drop`` leaves fields out (e.g. "bndbox", "name", "xmin", "difficult")."""
    parts = [] if "name" in drop else [f"<name>{name}</name>"]
    parts += [f"<{f}>{v}</{f}>" for f, v in (("pose", "Left"), ("truncated", 0), ("difficult", difficult))]
    parts = [p for p in parts if not any(p.startswith(f"<{d}>") for d in drop)]
    if "bndbox" not in drop:
        coords = "".join(
            f"<{c}>{v}</{c}>" for c, v in zip(("xmin", "ymin", "xmax", "ymax"), box) if c not in drop
        )
        parts.append(f"<bndbox>{coords}</bndbox>")
    return "<object>" + "".join(parts) + "</object>"


def write_voc(
    dirname: Path, images: dict, split: str = "test", sizes: dict | None = None, no_size: bool = False
) -> None:
    """A VOC year folder: ``images`` is {id: [object xml, ...]}, image sizes 120x160 (h, w) unless given."""
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (dirname / sub).mkdir(parents=True, exist_ok=True)
    for fileid, objects in images.items():
        h, w = (sizes or {}).get(fileid, (120, 160))
        size = "" if no_size else f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
        xml = f"<annotation><filename>{fileid}.jpg</filename>{size}{''.join(objects)}</annotation>"
        (dirname / "Annotations" / f"{fileid}.xml").write_text(xml)
        cv2.imwrite(str(dirname / "JPEGImages" / f"{fileid}.jpg"), np.zeros((h, w, 3), np.uint8))
    (dirname / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))


# Image 1: cat A, a *difficult* cat B. Image 2: cat C, dog D. VOC corners are 1-based inclusive.
A, B, C, D = (11, 11, 50, 50), (61, 11, 100, 50), (11, 11, 40, 40), (51, 51, 90, 90)
FIXTURE = {
    "000001": [obj_xml("cat", A), obj_xml("cat", B, difficult=1)],
    "000002": [obj_xml("cat", C), obj_xml("dog", D)],
}


def test_checked_loader_returns_detectron2s_dicts(tmp_path):
    write_voc(tmp_path, FIXTURE)
    dicts = load_voc_instances_checked(str(tmp_path), "test", CLASSES)
    assert dicts == load_voc_instances(str(tmp_path), "test", CLASSES)
    assert [d["image_id"] for d in dicts] == ["000001", "000002"]
    assert (dicts[0]["height"], dicts[0]["width"]) == (120, 160)
    # detectron2 keeps difficult objects for training and shifts xmin/ymin to 0-based.
    assert [a["bbox"] for a in dicts[0]["annotations"]] == [
        [10.0, 10.0, 50.0, 50.0],
        [60.0, 10.0, 100.0, 50.0],
    ]
    assert [a["category_id"] for a in dicts[1]["annotations"]] == [0, 1]


@pytest.mark.parametrize(
    "objects, field",
    [
        ([obj_xml("cat", A, drop=("bndbox",))], "<bndbox>"),
        ([obj_xml("cat", A, drop=("name",))], "<name>"),
        ([obj_xml("cat", A, drop=("ymax",))], "<bndbox><ymax>"),
        ([obj_xml("cat", A, drop=("difficult",))], "<difficult>"),  # read by the evaluation (test split)
        ([obj_xml("horse", A)], "'horse'"),
    ],
)
def test_xml_missing_a_field_names_file_and_field(tmp_path, objects, field):
    write_voc(tmp_path, {"000001": [obj_xml("dog", D)], "000002": objects})
    with pytest.raises(QuantMimicInputError) as err:
        load_voc_instances_checked(str(tmp_path), "test", CLASSES)
    msg = str(err.value)
    assert str(tmp_path / "Annotations" / "000002.xml") in msg and field in msg
    assert "\n" not in msg and msg.endswith(".")


def test_missing_size_and_split_files(tmp_path):
    write_voc(tmp_path / "nosize", FIXTURE, no_size=True)
    with pytest.raises(QuantMimicInputError, match=r"000001\.xml has no <size><width>"):
        load_voc_instances_checked(str(tmp_path / "nosize"), "test", CLASSES)
    with pytest.raises(QuantMimicInputError, match=r"ImageSets/Main/trainval\.txt does not exist"):
        load_voc_instances_checked(str(tmp_path / "nosize"), "trainval", CLASSES)


def test_eval_fields_are_required_for_the_test_split_only(tmp_path):
    images = {"000001": [obj_xml("cat", A, drop=("difficult", "pose"))], "000002": [obj_xml("dog", D)]}
    write_voc(tmp_path, images, split="trainval")
    assert len(load_voc_instances_checked(str(tmp_path), "trainval", CLASSES)) == 2
    with pytest.raises(QuantMimicInputError, match="<difficult>"):
        load_voc_instances_checked(str(tmp_path), "trainval", CLASSES, check_eval_fields=True)


def test_register_checked_voc_keeps_detectron2s_names_and_metadata(tmp_path):
    write_voc(tmp_path / "VOC2007", {"000001": [obj_xml("cat", A, drop=("name",))], "000002": []})
    before = MetadataCatalog.get("voc_2007_test").as_dict()
    loaders = {name: DatasetCatalog[name] for name, _, _ in VOC_SPLITS}
    metadata = {name: MetadataCatalog.get(name).as_dict() for name, _, _ in VOC_SPLITS}
    try:
        assert register_checked_voc(tmp_path) == [name for name, _, _ in VOC_SPLITS]
        meta = MetadataCatalog.get("voc_2007_test")
        assert meta.dirname == str(tmp_path / "VOC2007") and meta.year == 2007 and meta.split == "test"
        assert meta.evaluator_type == "pascal_voc" and meta.thing_classes == before["thing_classes"]
        with pytest.raises(QuantMimicInputError, match=r"000001\.xml has no <name>"):
            DatasetCatalog.get("voc_2007_test")
    finally:  # detectron2's own registration back, as importing quant_mimic leaves it
        for name, loader in loaders.items():
            DatasetCatalog.remove(name)
            DatasetCatalog.register(name, loader)
            MetadataCatalog.remove(name)
            MetadataCatalog.get(name).set(**{k: v for k, v in metadata[name].items() if k != "name"})
    assert MetadataCatalog.get("voc_2007_test").as_dict() == before


def test_importing_the_package_leaves_detectron2s_voc_loader_alone():
    """In a fresh process (tests in this one may have installed the checked loader)."""
    code = (
        "import quant_mimic; from detectron2.data import DatasetCatalog; "
        "print(DatasetCatalog['voc_2007_test'].__code__.co_filename)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (
        done.stdout.strip()
        .splitlines()[-1]
        .endswith(os.path.join("detectron2", "data", "datasets", "pascal_voc.py"))
    )


def instances(boxes_xyxy, scores, classes, size=(120, 160)) -> Instances:
    inst = Instances(size)
    inst.pred_boxes = Boxes(torch.tensor(boxes_xyxy, dtype=torch.float32))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


def zero_based(box):
    """A VOC box (1-based inclusive corners) as detectron2 predicts it (the evaluator adds 1 to xmin, ymin)."""
    return [box[0] - 1.0, box[1] - 1.0, float(box[2]), float(box[3])]


def test_pascal_voc_evaluator_ignores_difficult_objects(tmp_path):
    dirname = tmp_path / "VOC2007"
    write_voc(dirname, FIXTURE)
    name = "qm_test_voc_2007_test"
    register_pascal_voc(name, str(dirname), "test", 2007, CLASSES)
    MetadataCatalog.get(name).evaluator_type = "pascal_voc"
    try:
        evaluator = PascalVOCDetectionEvaluator(name)
        evaluator.reset()
        far = [100.0, 80.0, 120.0, 110.0]  # overlaps nothing
        # cat, by score: A (TP) .9, B (difficult: ignored) .8, far (FP) .7, C (TP) .6; dog: D (TP) .95.
        evaluator.process(
            [{"image_id": "000001"}, {"image_id": "000002"}],
            [
                {"instances": instances([zero_based(A), zero_based(B)], [0.9, 0.8], [0, 0])},
                {"instances": instances([far, zero_based(C), zero_based(D)], [0.7, 0.6, 0.95], [0, 0, 1])},
            ],
        )
        result = evaluator.evaluate()["bbox"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    # cat, 2 non-difficult objects: precision 1, 1, 1/2, 2/3 at recall .5, .5, .5, 1 (the difficult hit adds
    # neither TP nor FP). VOC2007 11-point AP: 6 recall points (0 .. .5) at precision 1, 5 (.6 .. 1) at 2/3.
    cat_ap = (6 * 1 + 5 * 2 / 3) / 11
    dog_ap = 1.0
    # The boxes are exact, so every IoU threshold (.5 ... .95) gives the same AP.
    for key in ("AP", "AP50", "AP75"):
        assert result[key] == pytest.approx(100 * (cat_ap + dog_ap) / 2)
