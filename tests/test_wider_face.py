"""WIDER FACE: the annotation loader on fixtures in the official format, its error messages, the lazy
registration, and the official evaluation (WiderFaceEvaluator) against hand-calculated AP values."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from quant_mimic.data.wider_face import load_wider_face, parse_wider_face_gt, register_wider_face
from quant_mimic.errors import QuantMimicInputError
from quant_mimic.evaluation.wider_face import (
    WiderFaceEvaluator,
    box_overlaps_plus1,
    image_eval,
    load_wider_face_gt,
    normalize_scores,
)

# Three images: faces kept, a zero-width face (dropped), an invalid face (crowd), and a 0-face image.
TRAIN_LINES = [
    "0--Parade/0_Parade_marchingband_1_5.jpg",
    "3",
    "10 20 30 40 0 0 0 0 0 0",
    "50 60 0 10 1 0 0 0 0 0",
    "5 6 12 14 2 0 0 1 1 0",
    "1--Handshaking/1_Handshaking_Handshaking_1_7.jpg",
    "0",
    "0 0 0 0 0 0 0 0 0 0",
    "1--Handshaking/1_Handshaking_Handshaking_1_9.jpg",
    "1",
    "1 2 3 4 0 1 0 0 0 1",
]
# The official files end face lines with a space.
TRAIN_GT = "".join(line + (" \n" if " " in line else "\n") for line in TRAIN_LINES)
IMAGE_SIZES = {  # path -> (height, width)
    "0--Parade/0_Parade_marchingband_1_5.jpg": (48, 64),
    "1--Handshaking/1_Handshaking_Handshaking_1_7.jpg": (32, 40),
    "1--Handshaking/1_Handshaking_Handshaking_1_9.jpg": (20, 24),
}


def write_wider_root(root: Path, split: str = "train", gt_text: str = TRAIN_GT) -> Path:
    """``<root>/WIDER_FACE`` with the images of IMAGE_SIZES and ``wider_face_<split>_bbx_gt.txt``."""
    base = root / "WIDER_FACE"
    for rel, (h, w) in IMAGE_SIZES.items():
        path = base / f"WIDER_{split}" / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((h, w, 3), 127, np.uint8))
    ann = base / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(gt_text)
    return ann


def test_loader_reads_official_format(tmp_path):
    ann = write_wider_root(tmp_path)
    image_root = tmp_path / "WIDER_FACE" / "WIDER_train" / "images"
    dicts = load_wider_face(ann, image_root)
    assert [d["image_id"] for d in dicts] == [
        "0--Parade/0_Parade_marchingband_1_5",
        "1--Handshaking/1_Handshaking_Handshaking_1_7",
        "1--Handshaking/1_Handshaking_Handshaking_1_9",
    ]
    for d, (rel, (h, w)) in zip(dicts, IMAGE_SIZES.items()):
        assert d["file_name"] == str(image_root / rel)
        assert (d["height"], d["width"]) == (h, w)
    first = dicts[0]["annotations"]
    # The 0-width face is dropped; the invalid face is kept as crowd (detectron2 drops it from training).
    assert [a["bbox"] for a in first] == [[10.0, 20.0, 30.0, 40.0], [5.0, 6.0, 12.0, 14.0]]
    assert [a["iscrowd"] for a in first] == [0, 1]
    assert all(a["bbox_mode"] == BoxMode.XYWH_ABS and a["category_id"] == 0 for a in first)
    assert dicts[1]["annotations"] == []  # "0" + the line of ten zeros
    assert [a["bbox"] for a in dicts[2]["annotations"]] == [[1.0, 2.0, 3.0, 4.0]]

    records = parse_wider_face_gt(ann)  # the raw parse keeps every face line with its attributes
    assert [len(r.faces) for r in records] == [3, 0, 1]
    assert [r.line for r in records] == [1, 6, 9]
    assert records[0].faces[2].invalid == 1 and records[0].faces[2].blur == 2
    assert records[2].faces[0].pose == 1


@pytest.mark.parametrize(
    "text, line, words",
    [
        # a truncated face line (9 of 10 numbers)
        ("a/x_1.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0\n", 4, "found 9"),
        # a non-integer
        ("a/x_1.jpg\n1\n1 2 3 four 0 0 0 0 0 0\n", 3, "four"),
        # a face count larger than the face lines that follow
        ("a/x_1.jpg\n2\n1 2 3 4 0 0 0 0 0 0\nb/y_2.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n", 4, "does not match"),
        # a face count smaller than the face lines that follow
        ("a/x_1.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n5 6 7 8 0 0 0 0 0 0\n", 4, "image path"),
        # the file ends inside a record
        ("a/x_1.jpg\n3\n1 2 3 4 0 0 0 0 0 0\n", 3, "ends"),
        # the file ends right after an image path
        ("a/x_1.jpg\n1\n1 2 3 4 0 0 0 0 0 0\nb/y_2.jpg\n", 4, "ends"),
        # a non-integer face count
        ("a/x_1.jpg\nthree\n", 2, "three"),
    ],
)
def test_malformed_annotation_names_file_and_line(tmp_path, text, line, words):
    ann = tmp_path / "wider_face_val_bbx_gt.txt"
    ann.write_text(text)
    with pytest.raises(QuantMimicInputError) as err:
        parse_wider_face_gt(ann)
    msg = str(err.value)
    assert str(ann) in msg and f"line {line}" in msg and words in msg
    assert "\n" not in msg and msg.endswith(".")  # one sentence, with the fix at its end
    assert "wider_face_split.zip" in msg


def test_registration_is_lazy_and_reads_the_layout(tmp_path):
    register_wider_face(tmp_path / "absent", prefix="qm_test_wider_absent")  # no folder: no error
    assert "qm_test_wider_absent_val" in DatasetCatalog.list()
    with pytest.raises(QuantMimicInputError, match="does not exist"):
        DatasetCatalog.get("qm_test_wider_absent_val")

    write_wider_root(tmp_path)
    register_wider_face(tmp_path, prefix="qm_test_wider")
    dicts = DatasetCatalog.get("qm_test_wider_train")
    assert len(dicts) == 3 and sum(len(d["annotations"]) for d in dicts) == 3
    meta = MetadataCatalog.get("qm_test_wider_val")
    assert meta.thing_classes == ["face"] and meta.evaluator_type == "wider_face"
    assert meta.gt_dir == str(tmp_path / "WIDER_FACE" / "eval_tools" / "ground_truth")
    assert MetadataCatalog.get("qm_test_wider_train").get("gt_dir") is None  # ground truth: val only
    # The default names are registered at import of quant_mimic.
    assert {"wider_face_train", "wider_face_val"} <= set(DatasetCatalog.list())
    for name in DatasetCatalog.list():
        if name.startswith("qm_test_wider"):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------


def cell(items) -> np.ndarray:
    """A MATLAB (n, 1) cell array as scipy.io.savemat writes it."""
    arr = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        arr[i, 0] = item
    return arr


def idx(*ones_based) -> np.ndarray:
    return np.array(ones_based, dtype=np.float64).reshape(-1, 1)


# Ground truth, x y w h. Image A: g1 (easy/medium/hard), g2 (hard only), g3 (ignored everywhere, like an
# invalid face). Image B: g4 (all settings). Image C: g5 (medium + hard), never detected. Image D: no face.
EVENTS = ["0--Parade", "1--Handshaking"]
FILES = [["0_Parade_A_1", "0_Parade_B_2"], ["1_Handshaking_C_3", "1_Handshaking_D_4"]]
G = {
    "g1": [0, 0, 10, 10],
    "g2": [20, 0, 10, 10],
    "g3": [40, 0, 10, 10],
    "g4": [0, 0, 20, 20],
    "g5": [0, 0, 10, 10],
}
BOXES = [
    [np.array([G["g1"], G["g2"], G["g3"]], float), np.array([G["g4"]], float)],
    [np.array([G["g5"]], float), np.zeros((0, 4))],
]
GT_LISTS = {
    "easy": [[idx(1), idx(1)], [idx(), idx()]],
    "medium": [[idx(1), idx(1)], [idx(1), idx()]],
    "hard": [[idx(1, 2), idx(1)], [idx(1), idx()]],
}


def write_wider_gt(gt_dir: Path) -> None:
    gt_dir.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(
        str(gt_dir / "wider_face_val.mat"),
        {
            "event_list": cell(EVENTS),
            "file_list": cell([cell(f) for f in FILES]),
            "face_bbx_list": cell([cell(b) for b in BOXES]),
        },
    )
    for setting, gt_list in GT_LISTS.items():
        scipy.io.savemat(
            str(gt_dir / f"wider_{setting}_val.mat"), {"gt_list": cell([cell(g) for g in gt_list])}
        )


def xywh_to_instances(dets, size=(100, 100)) -> Instances:
    dets = np.asarray(dets, dtype=np.float32).reshape(-1, 5)
    boxes = dets[:, :4].copy()
    boxes[:, 2:] += boxes[:, :2]
    inst = Instances(size)
    inst.pred_boxes = Boxes(torch.from_numpy(boxes))
    inst.scores = torch.from_numpy(dets[:, 4])
    inst.pred_classes = torch.zeros(len(dets), dtype=torch.int64)
    return inst


def test_gt_files_are_read_with_the_official_nesting(tmp_path):
    write_wider_gt(tmp_path)
    gt = load_wider_face_gt(tmp_path)
    assert gt.events == EVENTS and gt.files == FILES
    np.testing.assert_array_equal(gt.boxes[0][0], BOXES[0][0])
    assert gt.boxes[1][1].shape == (0, 4)
    assert gt.counted["hard"][0][0].tolist() == [1, 2] and gt.counted["easy"][1][0].tolist() == []


def test_box_overlap_and_greedy_matching():
    # 10x10-pixel boxes (x2 = x1 + 9 with the +1 convention) overlapping by 5 columns: IoU 50 / 150.
    iou = box_overlaps_plus1(np.array([[0.0, 0, 9, 9]]), np.array([[5.0, 0, 14, 9], [30, 30, 39, 39]]))
    np.testing.assert_allclose(iou, [[1 / 3, 0.0]])
    gt = np.array([G["g1"], G["g3"]], float)
    pred = np.array([G["g1"] + [0.9], G["g3"] + [0.8], G["g1"] + [0.7], [60, 60, 5, 5, 0.6]], float)
    pred_recall, kept = image_eval(pred, gt, counted=np.array([True, False]))
    # The ignored face's detection is dropped (neither TP nor FP); the duplicate and the miss are FPs.
    assert kept.tolist() == [True, False, True, True]
    assert pred_recall.tolist() == [1, 1, 1, 1]


def test_scores_are_normalised_globally():
    out = normalize_scores(
        {"a": np.array([[0, 0, 1, 1, 0.2], [0, 0, 1, 1, 0.6]]), "b": np.array([[0, 0, 1, 1, 1.0]])}
    )
    np.testing.assert_allclose(out["a"][:, 4], [0.0, 0.5])
    np.testing.assert_allclose(out["b"][:, 4], [1.0])
    same = normalize_scores({"a": np.array([[0, 0, 1, 1, 0.3]])})
    assert same["a"][0, 4] == 1.0  # all scores equal: no division by zero


def test_wider_face_evaluator_matches_hand_calculation(tmp_path):
    gt_dir = tmp_path / "ground_truth"
    write_wider_gt(gt_dir)
    name = "qm_test_wider_eval"
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(gt_dir=str(gt_dir), thing_classes=["face"], evaluator_type="wider_face")
    out_dir = tmp_path / "preds"
    evaluator = WiderFaceEvaluator(name, output_dir=str(out_dir))
    evaluator.reset()

    # Raw scores 0.1 .. 0.9 normalise to (s - 0.1) / 0.8. In global score order:
    # d1 (A, g1) 1.0, d4 (A, nothing) .9375, d2 (A, g3 ignored) .875, d5 (B, g4) .75, d3 (A, g2) .625,
    # d6 (B, g4 again) .25, d7 (D, no ground truth: skipped by the official tool) 0.
    root = "/data/WIDER_FACE/WIDER_val/images"
    inputs = [
        {"file_name": f"{root}/0--Parade/0_Parade_A_1.jpg", "image_id": "0--Parade/0_Parade_A_1"},
        {"file_name": "/elsewhere/flat/0_Parade_B_2.jpg"},  # found by its (unique) image name
        {"file_name": f"{root}/1--Handshaking/1_Handshaking_D_4.jpg"},
        {"file_name": f"{root}/9--Other/not_in_the_ground_truth.jpg"},  # ignored with a warning
    ]
    outputs = [
        {
            "instances": xywh_to_instances(
                [G["g1"] + [0.9], G["g3"] + [0.8], G["g2"] + [0.6], [60, 60, 10, 10, 0.85]]
            )
        },
        {"instances": xywh_to_instances([G["g4"] + [0.7], G["g4"] + [0.3]])},
        {"instances": xywh_to_instances([[5, 5, 10, 10, 0.1]])},
        {"instances": xywh_to_instances([[5, 5, 10, 10, 0.5]])},
    ]
    evaluator.process(inputs[:2], outputs[:2])
    evaluator.process(inputs[2:], outputs[2:])
    results = evaluator.evaluate()
    assert list(results) == ["wider_face"] and list(results["wider_face"]) == ["easy", "medium", "hard"]
    ap = results["wider_face"]
    # easy (g1, g4; 2 faces): TP, FP, -, TP, -, FP -> (P, R) = (1, .5) (.5, .5) (2/3, 1) (.5, 1):
    #   AP = .5 * 1 + .5 * 2/3. d2 and d3 hit ignored faces: as FPs they would lower it.
    assert ap["easy"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    # medium (g1, g4, g5; 3 faces): same detections, recall steps of 1/3: AP = 1/3 * 1 + 1/3 * 2/3.
    assert ap["medium"] == pytest.approx(100 * (1 / 3 + 1 / 3 * 2 / 3))
    # hard (g1, g2, g4, g5; 4 faces): TP, FP, -, TP, TP, FP -> P = 1, .5, 2/3, 3/4, 3/5 at
    #   R = 1/4, 1/4, 2/4, 3/4, 3/4: AP = .25 * 1 + .25 * .75 + .25 * .75.
    assert ap["hard"] == pytest.approx(100 * 0.625)

    # The official tools' prediction files, one per ground-truth image, raw scores.
    a_lines = (out_dir / "0--Parade" / "0_Parade_A_1.txt").read_text().splitlines()
    assert a_lines[:2] == ["0_Parade_A_1", "4"]
    assert [float(v) for v in a_lines[2].split()] == pytest.approx([0, 0, 10, 10, 0.9])
    c_lines = (out_dir / "1--Handshaking" / "1_Handshaking_C_3.txt").read_text().splitlines()
    assert c_lines == ["1_Handshaking_C_3", "0"]
    MetadataCatalog.remove(name)


def test_evaluator_refuses_a_split_without_ground_truth(tmp_path):
    name = "qm_test_wider_no_gt"
    MetadataCatalog.get(name).set(thing_classes=["face"])
    with pytest.raises(QuantMimicInputError, match="wider_face_val"):
        WiderFaceEvaluator(name)
    with pytest.raises(QuantMimicInputError, match="wider_face_val.mat does not exist"):
        WiderFaceEvaluator(name, gt_dir=str(tmp_path))
    MetadataCatalog.remove(name)


def test_trainer_builds_the_wider_face_evaluator(tmp_path):
    from detectron2.config import get_cfg

    from quant_mimic.engine.trainer import Trainer

    write_wider_gt(tmp_path / "gt")
    name = "qm_test_wider_trainer"
    MetadataCatalog.get(name).set(gt_dir=str(tmp_path / "gt"), evaluator_type="wider_face")
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    try:
        evaluator = Trainer.build_evaluator(cfg, name)
        assert isinstance(evaluator, WiderFaceEvaluator)
        assert evaluator._output_dir == str(tmp_path / "out" / "inference" / name)
    finally:
        MetadataCatalog.remove(name)
