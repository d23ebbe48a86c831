"""Fault tests of train_net.py: each bad input ends as one line ``train_net.py: error: ...`` on stderr with
exit status 2 (no traceback), whether it is found before the workers start or inside one; a truncated
last checkpoint resumes from the previous one; an --eval-only of a run's export leaves the run untouched.

Everything runs train_net.py in a subprocess; most failures are found before training starts, the few
that are found in a worker use 2-5 iteration runs.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import conftest
import cv2
import numpy as np
import pytest
import torch
from conftest import CONFIGS, STUDENT_CONFIG

QM_CONFIG = CONFIGS / "qm_R_tiny_FPN.yaml"
MINI = [
    "DATASETS.TRAIN", "('quantmimic_shapes_mini_train',)",
    "DATASETS.TEST", "('quantmimic_shapes_mini_val',)",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "1",
    "DATALOADER.NUM_WORKERS", "0",
    "TEST.EVAL_PERIOD", "0",
]  # fmt: skip


def run_train_net(args: list[str], datasets_root: Path) -> subprocess.CompletedProcess:
    """train_net.py as a user runs it: Python's warnings are left on, so that "one line on stderr" holds
    for what a user sees."""
    return conftest.run_train_net(args, datasets_root, warnings=True)


def one_error_line(run) -> str:
    """The single stderr line of a failed run (asserting exit 2, one line, no traceback)."""
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2, run.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert lines[0].startswith("train_net.py: error: "), lines[0]
    return lines[0]


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


# --- fixtures: a teacher (untrained, built here) and a 2-iteration QM run with its student export ---


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A ResNet18-1-8 FPN teacher config (wider than the 1-16 student) and a checkpoint of its weights."""
    from detectron2.modeling import build_model

    from quant_mimic.config import build_config

    folder = tmp_path_factory.mktemp("teacher")
    config = folder / "teacher_R18_8_FPN.yaml"
    config.write_text(f'_BASE_: "{STUDENT_CONFIG}"\nMODEL:\n  RESNETS:\n    WIDTH_DIVISOR: 8\n')
    cfg = build_config(str(config), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    weights = folder / "model_final.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    return config, weights


def qm_opts(teacher, output_dir) -> list[str]:
    config, weights = teacher
    return [*MINI, "MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(config), "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS",
            str(weights), "MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES", "0", "SOLVER.MAX_ITER", "2",
            "SOLVER.CHECKPOINT_PERIOD", "1", "OUTPUT_DIR", str(output_dir)]  # fmt: skip


@pytest.fixture(scope="module")
def qm_run(teacher, datasets_root, tmp_path_factory):
    """A 2-iteration Quantization Mimic run: model_0000000.pth, model_0000001.pth, model_final.pth,
    student_final.pth, student_config.yaml. Tests must not change it (copy it first)."""
    out = tmp_path_factory.mktemp("qm_run")
    run = run_train_net(["--config-file", str(QM_CONFIG), *qm_opts(teacher, out)], datasets_root)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ["model_0000000.pth", "model_final.pth", "student_final.pth", "student_config.yaml"]:
        assert (out / name).is_file(), name
    return out


def student_args(output_dir, *extra, flags=()) -> list[str]:
    return ["--config-file", str(STUDENT_CONFIG), *flags, *MINI, "OUTPUT_DIR", str(output_dir), *extra]


# --- failures found before any worker starts ---


def test_config_yaml_syntax_error(tmp_path, datasets_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{STUDENT_CONFIG}"\nSOLVER:\n  BASE_LR: [0.02\n  MAX_ITER: 4\n')
    line = one_error_line(
        run_train_net(["--config-file", str(bad), "OUTPUT_DIR", str(tmp_path / "o")], datasets_root)
    )
    assert f"Config file {bad} line " in line and "is not valid YAML" in line, line


def test_batch_not_divisible_by_processes(tmp_path, datasets_root):
    run = run_train_net(
        student_args(tmp_path, "SOLVER.IMS_PER_BATCH", "3", flags=["--num-gpus", "2"]), datasets_root
    )
    line = one_error_line(run)
    assert "SOLVER.IMS_PER_BATCH 3 cannot be split evenly over 2 processes" in line, line
    assert "multiple of 2" in line


def test_truncated_model_weights(tmp_path, datasets_root, teacher):
    weights = tmp_path / "model_final.pth"
    shutil.copy(teacher[1], weights)
    truncate(weights)
    line = one_error_line(
        run_train_net(student_args(tmp_path / "o", "MODEL.WEIGHTS", str(weights)), datasets_root)
    )
    assert f"MODEL.WEIGHTS file {weights} is truncated or corrupt" in line, line


@pytest.mark.parametrize(
    "what, expected",
    [
        ("missing_config", r"TEACHER_CONFIG '.*/no_such_teacher.yaml' is not a config file"),
        ("bad_yaml_config", r"Teacher config \(MODEL.QUANT_MIMIC.TEACHER_CONFIG\) .*/teacher_bad.yaml line 3, column \d+ is not valid YAML"),
        ("text_weights", r"Teacher weights .*/notes.txt \(MODEL.QUANT_MIMIC.TEACHER_WEIGHTS\) is a text file"),
        ("truncated_weights", r"Teacher weights .*/model_final.pth \(MODEL.QUANT_MIMIC.TEACHER_WEIGHTS\) cannot be read as a PyTorch checkpoint \(RuntimeError: PytorchStreamReader failed"),
        ("student_weights", r"Teacher weights .*/student_final.pth do not match the teacher config .*wrong shape"),
        ("qm_weights", r"Teacher weights .*/qm_run\d*/model_final.pth are a Quantization Mimic checkpoint"),
    ],
)  # fmt: skip
def test_wrong_teacher(what, expected, teacher, qm_run, tmp_path, datasets_root):
    config, weights = teacher
    if what == "missing_config":
        config = tmp_path / "no_such_teacher.yaml"
    elif what == "bad_yaml_config":
        config = tmp_path / "teacher_bad.yaml"
        config.write_text(f'_BASE_: "{STUDENT_CONFIG}"\nMODEL:\n  RESNETS: {{WIDTH_DIVISOR: 8\n')
    elif what == "text_weights":
        weights = tmp_path / "notes.txt"
        weights.write_text("the teacher is in output/teacher\n")
    elif what == "truncated_weights":
        weights = tmp_path / "model_final.pth"
        shutil.copy(teacher[1], weights)
        truncate(weights)
    elif what == "student_weights":
        weights = qm_run / "student_final.pth"
    elif what == "qm_weights":
        weights = qm_run / "model_final.pth"
    run = run_train_net(
        ["--config-file", str(QM_CONFIG), *qm_opts((config, weights), tmp_path / "o")], datasets_root
    )
    line = one_error_line(run)
    assert re.search(expected, line), line
    assert not (tmp_path / "o").exists()  # found before anything was written


def test_resume_with_no_readable_checkpoint(tmp_path, datasets_root, teacher):
    (tmp_path / "model_final.pth").write_bytes(Path(teacher[1]).read_bytes()[:1000])
    (tmp_path / "last_checkpoint").write_text("model_final.pth")
    before = file_hashes(tmp_path)
    line = one_error_line(run_train_net(student_args(tmp_path, flags=["--resume"]), datasets_root))
    assert (
        f"the last checkpoint {tmp_path / 'model_final.pth'} (named by {tmp_path / 'last_checkpoint'})"
        in line
    )
    assert "no earlier readable checkpoint" in line and "without --resume" in line, line
    assert file_hashes(tmp_path) == before  # nothing deleted or rewritten


# --- failures found inside a worker: malformed annotations, an unreadable image ---


def write_wider(root: Path, gt_text: str, truncated: bool = False) -> None:
    """``<root>/WIDER_FACE``: two 96x96 JPEG images with one face each (the first cut short if
    ``truncated``) and ``wider_face_train_bbx_gt.txt`` = ``gt_text``."""
    images = root / "WIDER_FACE" / "WIDER_train" / "images" / "0--Parade"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(2):
        path = images / f"0_Parade_{k}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
        if truncated and k == 0:
            truncate(path, 0.4)
    split = root / "WIDER_FACE" / "wider_face_split"
    split.mkdir(parents=True)
    (split / "wider_face_train_bbx_gt.txt").write_text(gt_text)


GOOD_GT = "".join(f"0--Parade/0_Parade_{k}.jpg\n1\n10 10 40 40 0 0 0 0 0 0 \n" for k in range(2))
WIDER_OPTS = ["DATASETS.TRAIN", "('wider_face_train',)", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "5"]


def test_malformed_wider_face_annotation(tmp_path, datasets_root):
    write_wider(tmp_path, GOOD_GT.replace("10 10 40 40 0 0 0 0 0 0", "10 10 40", 1))
    line = one_error_line(run_train_net(student_args(tmp_path / "o", *WIDER_OPTS), tmp_path))
    gt = tmp_path / "WIDER_FACE" / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    assert f"{gt} line 3: expected ten integers" in line, line


def test_malformed_voc_xml_in_two_processes(tmp_path):
    voc = tmp_path / "VOC2007"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (voc / sub).mkdir(parents=True)
    for fileid in ("000001", "000002"):
        cv2.imwrite(str(voc / "JPEGImages" / f"{fileid}.jpg"), np.zeros((64, 64, 3), np.uint8))
        (voc / "Annotations" / f"{fileid}.xml").write_text(
            "<annotation><size><width>64</width><height>64</height></size><object><name>cat</name>"
            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object></annotation>"
        )
    (voc / "Annotations" / "000002.xml").write_text("<annotation><size><width>64</width>")  # cut short
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n000002\n")
    args = student_args(tmp_path / "o", "DATASETS.TRAIN", "('voc_2007_trainval',)", "DATASETS.TEST", "()",
                        "SOLVER.MAX_ITER", "2", flags=["--num-gpus", "2"])  # fmt: skip
    line = one_error_line(run_train_net(args, tmp_path))
    assert f"The VOC annotation {voc / 'Annotations' / '000002.xml'} is not valid XML" in line, line


def test_truncated_jpeg_met_during_training(tmp_path):
    write_wider(tmp_path, GOOD_GT, truncated=True)
    args = student_args(
        tmp_path / "o", *WIDER_OPTS, "DATALOADER.NUM_WORKERS", "1"
    )  # read in a worker process
    line = one_error_line(run_train_net(args, tmp_path))
    image = tmp_path / "WIDER_FACE" / "WIDER_train" / "images" / "0--Parade" / "0_Parade_0.jpg"
    assert f"The image {image} (image_id 0--Parade/0_Parade_0) cannot be read" in line, line
    assert "truncated" in line


# --- recovery: a truncated last checkpoint; --eval-only of an export ---


def test_truncated_last_checkpoint_resumes_from_the_previous_one(qm_run, teacher, tmp_path, datasets_root):
    out = tmp_path / "run"
    shutil.copytree(qm_run, out)
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    truncate(out / "model_final.pth")
    opts = [*qm_opts(teacher, out), "SOLVER.MAX_ITER", "3", "DATASETS.TEST", "()"]  # no evaluation at the end
    run = run_train_net(["--config-file", str(QM_CONFIG), "--resume", *opts], datasets_root)
    assert run.returncode == 0, run.stderr[-3000:]
    log = (out / "log.txt").read_text()
    warning = (
        f"--resume: the last checkpoint {out / 'model_final.pth'} (named by {out / 'last_checkpoint'}) is "
        f"truncated or corrupt"
    )
    assert warning in log and f"resuming from {out / 'model_0000001.pth'} (iteration 1)" in log
    assert f"Loading trainer from {out / 'model_0000001.pth'}" in log
    assert torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["iteration"] == 2
    assert (out / "model_0000000.pth").is_file() and (out / "model_0000001.pth").is_file()  # nothing deleted


def test_eval_only_of_the_export_leaves_the_run_untouched(qm_run, datasets_root):
    """The README's evaluation of a QM run's student export writes to <run>/eval/student_final/."""
    before = file_hashes(qm_run)
    args = ["--config-file", str(qm_run / "student_config.yaml"), "--eval-only",
            "MODEL.WEIGHTS", str(qm_run / "student_final.pth")]  # fmt: skip
    run = run_train_net(args, datasets_root)
    assert run.returncode == 0, run.stderr[-3000:]
    after = file_hashes(qm_run)
    assert {k: after[k] for k in before} == before  # every file of the run byte-identical
    new = sorted(set(after) - set(before))
    assert new and all(k.startswith("eval/student_final/") for k in new), new
    assert "eval/student_final/config.yaml" in new and "eval/student_final/log.txt" in new
    assert "GeneralizedRCNN" in (qm_run / "eval" / "student_final" / "config.yaml").read_text()
    assert "copypaste: AP,AP50" in run.stdout + run.stderr
