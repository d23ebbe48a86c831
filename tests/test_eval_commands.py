"""The evaluation commands on small fixtures with hand-calculated values: ``quant_mimic_tools.wider_face_eval``
(official WIDER FACE prediction files against the .mat ground truth: Easy / Medium / Hard AP) and
``quant_mimic_tools.voc_eval`` (devkit per-class result files: AP50 of every class beside the mean), and
``PascalVOCPerClassEvaluator``, whose result files the VOC command reads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_pascal_voc
from detectron2.evaluation import PascalVOCDetectionEvaluator
from test_voc import FIXTURE, A, B, C, D, instances, obj_xml, write_voc, zero_based
from test_wider_face import G, write_wider_gt

from quant_mimic.evaluation import PascalVOCPerClassEvaluator
from quant_mimic_tools import voc_eval, wider_face_eval


def run_command(module, argv: list[str], capsys) -> tuple[int, str, str]:
    """``module.main(argv)`` in this process: (exit status, stdout, stderr)."""
    try:
        module.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str, prog: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and lines[0].endswith("."), err
    return lines[0]


# --- WIDER FACE ----------------------------------------------------------------------------------------


def write_prediction(folder: Path, event: str, name: str, dets: list[list[float]]) -> None:
    """An official prediction file: the image name, the count, then ``x y w h score`` lines."""
    (folder / event).mkdir(parents=True, exist_ok=True)
    lines = [name, str(len(dets))] + [" ".join(f"{v:g}" for v in d) for d in dets]
    (folder / event / f"{name}.txt").write_text("\n".join(lines) + "\n")


def test_wider_face_eval_command_matches_hand_calculation(tmp_path, capsys):
    gt = tmp_path / "ground_truth"
    write_wider_gt(gt)  # test_wider_face's fixture: 4 images, faces g1..g5
    pred = tmp_path / "pred"
    # test_wider_face's hand-calculated case, as files: image C has no file (no detections), 9--Other is
    # not in the ground truth, image D's detection has no face to find (skipped, as the official tool does).
    write_prediction(pred, "0--Parade", "0_Parade_A_1", [G["g1"] + [0.9], G["g3"] + [0.8], G["g2"] + [0.6], [60, 60, 10, 10, 0.85]])  # fmt: skip
    write_prediction(pred, "0--Parade", "0_Parade_B_2", [G["g4"] + [0.7], G["g4"] + [0.3]])
    write_prediction(pred, "1--Handshaking", "1_Handshaking_D_4", [[5, 5, 10, 10, 0.1]])
    write_prediction(pred, "9--Other", "not_in_the_ground_truth", [[5, 5, 10, 10, 0.5]])
    code, out, err = run_command(wider_face_eval, ["--pred", str(pred), "--gt", str(gt)], capsys)
    assert code == 0, err
    easy, medium, hard = 0.5 + 0.5 * 2 / 3, 1 / 3 + 1 / 3 * 2 / 3, 0.625  # see test_wider_face
    assert f"Easy   Val AP: {easy:.4f}" in out and f"Medium Val AP: {medium:.4f}" in out
    assert f"Hard   Val AP: {hard:.4f}" in out
    assert "1 of the 4 ground-truth images have no prediction file" in err and "1_Handshaking_C_3" in err
    assert "9--Other/not_in_the_ground_truth.txt" in err
    result = json.loads((pred / "wider_face_eval.json").read_text())
    assert result["easy"] == pytest.approx(easy) and result["medium"] == pytest.approx(medium)
    assert result["hard"] == pytest.approx(hard) and result["images_without_predictions"] == 1

    # a truncated file: one line naming the file and the line
    (pred / "0--Parade" / "0_Parade_B_2.txt").write_text("0_Parade_B_2\n2\n0 0 20 20 0.7\n0 0 20\n")
    code, _, err = run_command(wider_face_eval, ["--pred", str(pred), "--gt", str(gt)], capsys)
    line = one_error_line(err, "wider_face_eval")
    assert code == 2 and f"{pred / '0--Parade' / '0_Parade_B_2.txt'} line 4 is '0 0 20'" in line
    code, _, err = run_command(wider_face_eval, ["--pred", str(pred), "--gt", str(tmp_path)], capsys)
    assert code == 2 and "wider_face_val.mat does not exist" in one_error_line(err, "wider_face_eval")


# --- Pascal VOC ----------------------------------------------------------------------------------------

# test_voc's fixture: image 1 holds cat A and a difficult cat B, image 2 cat C and dog D.
# cat by score: A .9 (TP), B .8 (difficult: ignored), far .7 (FP), C .6 (TP); dog: D .95 (TP).
# cat: precision 1, 1/2, 2/3 at recall .5, .5, 1. VOC2007 11-point: (6 x 1 + 5 x 2/3) / 11; area: .5 + .5 x 2/3.
CAT_07, CAT_AREA, DOG = 100 * (6 + 5 * 2 / 3) / 11, 100 * (0.5 + 0.5 * 2 / 3), 100.0
FAR = (101, 81, 120, 110)  # overlaps nothing


def devkit_line(image_id: str, score: float, box) -> str:
    return f"{image_id} {score} " + " ".join(str(v) for v in box)


def write_devkit_results(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cat = [("000001", 0.9, A), ("000001", 0.8, B), ("000002", 0.7, FAR), ("000002", 0.6, C)]
    (folder / "comp4_det_test_cat.txt").write_text("\n".join(devkit_line(*d) for d in cat) + "\n")
    (folder / "comp4_det_test_dog.txt").write_text(devkit_line("000002", 0.95, D) + "\n")


def test_voc_eval_command_prints_per_class_ap50(tmp_path, capsys):
    voc = tmp_path / "VOC2007"
    write_voc(voc, FIXTURE)
    pred = tmp_path / "pred"
    write_devkit_results(pred)
    code, out, err = run_command(
        voc_eval, ["--pred", str(pred), "--voc", str(voc), "--split", "test"], capsys
    )
    assert code == 0, err
    assert "VOC2007 11-point" in out
    assert f"| cat | {CAT_07:.1f} |" in out and f"| dog | {DOG:.1f} |" in out
    assert f"| **mean (2 classes)** | **{(CAT_07 + DOG) / 2:.1f}** |" in out
    result = json.loads((pred / "voc_eval.json").read_text())
    assert result["per_class_AP50"] == pytest.approx({"cat": CAT_07, "dog": DOG}, abs=1e-3)
    assert result["AP50"] == pytest.approx((CAT_07 + DOG) / 2, abs=1e-3)
    assert result["detections"] == {"cat": 4, "dog": 1} and result["metric"] == "07"

    # the area metric, a third class without objects (left out of the mean) and without a file
    argv = ["--pred", str(pred), "--voc", str(voc), "--metric", "area", "--classes", "cat,dog,bird"]
    code, out, err = run_command(voc_eval, [*argv, "--json", str(tmp_path / "area.json")], capsys)
    assert code == 0, err
    assert f"| cat | {CAT_AREA:.1f} |" in out and "| bird | - |" in out and "mean (2 classes)" in out
    assert "no detection file for 1 class(es) (bird)" in err
    result = json.loads((tmp_path / "area.json").read_text())
    assert result["per_class_AP50"]["bird"] is None
    assert result["AP50"] == pytest.approx((CAT_AREA + DOG) / 2, abs=1e-3)

    # a malformed line, an image the split does not list: one line naming the file and the line
    cat_file = pred / "comp4_det_test_cat.txt"
    cat_file.write_text("000001 0.9 11 11 50\n")
    code, _, err = run_command(voc_eval, ["--pred", str(pred), "--voc", str(voc)], capsys)
    assert code == 2 and f"{cat_file} line 1 is '000001 0.9 11 11 50'" in one_error_line(err, "voc_eval")
    cat_file.write_text("000009 0.9 11 11 50 50\n")
    code, _, err = run_command(voc_eval, ["--pred", str(pred), "--voc", str(voc)], capsys)
    assert code == 2 and "names image '000009', which the image set does not list" in one_error_line(
        err, "voc_eval"
    )


def test_per_class_evaluator_and_its_files(tmp_path, capsys):
    voc = tmp_path / "VOC2007"
    write_voc(voc, {**FIXTURE, "000003": [obj_xml("cat", A)]})  # image 3: a cat nobody detects
    name = "qm_test_voc_per_class"
    register_pascal_voc(name, str(voc), "test", 2007, ("cat", "dog"))
    MetadataCatalog.get(name).evaluator_type = "pascal_voc"
    far = [100.0, 80.0, 120.0, 110.0]
    inputs = [{"image_id": "000001"}, {"image_id": "000002"}, {"image_id": "000003"}]
    outputs = [
        {"instances": instances([zero_based(A), zero_based(B)], [0.9, 0.8], [0, 0])},
        {"instances": instances([far, zero_based(C), zero_based(D)], [0.7, 0.6, 0.95], [0, 0, 1])},
        {"instances": instances([], [], [])},
    ]
    try:
        results = {}
        for cls, kwargs in ((PascalVOCDetectionEvaluator, {}), (PascalVOCPerClassEvaluator, {"output_dir": str(tmp_path / "out")})):  # fmt: skip
            evaluator = cls(name, **kwargs)
            evaluator.reset()
            evaluator.process(inputs, outputs)
            results[cls.__name__] = evaluator.evaluate()["bbox"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    ours, theirs = results["PascalVOCPerClassEvaluator"], results["PascalVOCDetectionEvaluator"]
    # cat now has 3 objects: precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3: 11-point (4 x 1 + 3 x 2/3) / 11
    cat = 100 * (4 + 3 * 2 / 3) / 11
    assert ours["AP50-cat"] == pytest.approx(cat) and ours["AP50-dog"] == pytest.approx(100.0)
    for key in ("AP", "AP50", "AP75"):  # detectron2's own numbers, unchanged
        assert ours[key] == pytest.approx(theirs[key])
    assert ours["AP50"] == pytest.approx((cat + 100) / 2)

    # its devkit files evaluate to the same per-class numbers with the command
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["comp4_det_test_cat.txt", "comp4_det_test_dog.txt"]
    code, out, err = run_command(voc_eval, ["--pred", str(tmp_path / "out"), "--voc", str(voc)], capsys)
    assert code == 0, err
    assert f"| cat | {cat:.1f} |" in out and "| dog | 100.0 |" in out
