"""The main job's chain on the mini data set: every stage runs, the table is written, reruns reuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import pytest
from conftest import REPO

from quant_mimic_tools.pipeline import UserData, chain_stages, get_parser, resolve_data, summarize

STAGES = [
    "teacher_R18_2_FPN",
    "teacher_R18_2_FPN_quant",
    "student_scratch_seed0",
    "student_mimic_seed0",
    "student_qm_seed0",
]


# The smoke main job's 6 iterations per stage detect nothing; 40 (at a learning rate that batch 2 takes
# without diverging) make every stage detect something: seeded run, teacher AP 0.09 / quantized teacher
# 0.33, students 0.06 to 0.20 (AP50 0.3 to 2.4).
DETECTING_SCHEDULE = ["SOLVER.MAX_ITER", "40", "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "10"]


def run_pipeline(output, datasets_root) -> subprocess.CompletedProcess:
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "quant_mimic_tools.pipeline", "--smoke", "--output-dir", str(output),
           *DETECTING_SCHEDULE]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)


def image_size_and_spread(path) -> tuple[tuple[int, int], float]:
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not an image"
    return image.shape[:2], float(image.std())


def check_report(report) -> None:
    """Every file the report promises, with pictures of the right size that are not blank."""
    zoo = json.loads((report / "model_zoo.json").read_text())
    assert [r["model"] for r in zoo] == STAGES
    for row in zoo:
        assert row["params_M"] > 0 and row["gflops"] > 0 and row["latency_ms"] > 0
        assert set(row["latency_parts_ms"]) >= {"backbone", "rpn", "roi_heads", "postprocess"}
    teacher, student = zoo[0], zoo[2]
    assert teacher["params_M"] > 20 * student["params_M"] and teacher["gflops"] > 10 * student["gflops"]
    assert zoo[4]["checkpoint"].endswith("student_final.pth")  # QM rows point at the student export
    table = (report / "model_zoo.md").read_text()
    assert all(f"| {name} |" in table for name in STAGES)
    # predictions: 4 images x (ground truth + 5 models), tiles of 1.5 x 192 px under a 28 px title
    assert image_size_and_spread(report / "predictions.png")[0] == (4 * (288 + 28), 6 * 288)
    assert image_size_and_spread(report / "curves.png")[0] == (420, 1500)
    assert image_size_and_spread(report / "matching_ratio.png")[0] == (420, 700)
    for name in ("predictions.png", "curves.png", "matching_ratio.png"):
        assert image_size_and_spread(report / name)[1] > 5.0, f"{name} is blank"
    index = (report / "index.md").read_text()
    for name in ("predictions.png", "curves.png", "matching_ratio.png", "| student_qm_seed0 |"):
        assert name in index


def test_chain_order_and_teacher_wiring(tmp_path):
    stages = chain_stages(tmp_path, seeds=[0, 1])
    assert [s.name for s in stages][:5] == STAGES
    assert len(stages) == 8
    qm = stages[4]
    assert qm.opts[qm.opts.index("MODEL.QUANT_MIMIC.TEACHER_WEIGHTS") + 1].endswith(
        "teacher_R18_2_FPN_quant/model_final.pth"
    )
    assert qm.opts[-2:] == ["SEED", "0"]


def test_chain_on_user_data_reads_the_teachers_run_config(tmp_path):
    for val_format in ("coco", "voc"):
        data = UserData(["t=coco:/d/t.json:/d/t", "v=coco:/d/v.json:/d/v"], "t", "v", val_format)
        stages = chain_stages(tmp_path, seeds=[0], data=data)
        assert [s.name for s in stages] == STAGES
        for stage, teacher in ((stages[3], "teacher_R18_2_FPN"), (stages[4], "teacher_R18_2_FPN_quant")):
            key = stage.opts.index("MODEL.QUANT_MIMIC.TEACHER_CONFIG")
            assert stage.opts[key + 1] == str(tmp_path / teacher / "config.yaml")  # the data's classes
            assert "MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES" not in stage.opts  # the check runs on VOC too
    assert data.args() == ["--dataset", data.specs[0], "--dataset", data.specs[1]]
    assert data.opts() == ["DATASETS.TRAIN", "('t',)", "DATASETS.TEST", "('v',)"]


def test_user_data_is_recorded_and_checked_against_the_output(tmp_path):
    from quant_mimic.errors import QuantMimicInputError

    (tmp_path / "t.json").write_text("{}")
    spec = f"t=coco:{tmp_path / 't.json'}"

    def resolve(*argv):
        return resolve_data(get_parser().parse_args(list(argv)), tmp_path / "out")

    assert resolve() is None  # the built-in data set
    for argv, words in [
        (["--dataset", spec], "--dataset needs --train NAME and --val NAME"),
        (
            ["--dataset", spec, "--train", "t", "--val", "v"],
            r"--val v is not one of the --dataset names \(t\)",
        ),
    ]:
        with pytest.raises(QuantMimicInputError, match=words):
            resolve(*argv)
    data = resolve("--dataset", spec, "--train", "t", "--val", "t")
    assert data.specs == [f"t=coco:{tmp_path / 't.json'}:{tmp_path}"] and data.val_format == "coco"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "user_data.json").write_text(json.dumps(data.record()))
    assert resolve() == data  # a rerun on the same output needs no --dataset
    (tmp_path / "out" / "user_data.json").write_text(json.dumps({**data.record(), "val": "other"}))
    with pytest.raises(QuantMimicInputError, match="holds runs on other data"):
        resolve("--dataset", spec, "--train", "t", "--val", "t")
    (tmp_path / "out" / "user_data.json").unlink()
    (tmp_path / "out" / "teacher_R18_2_FPN").mkdir()
    with pytest.raises(QuantMimicInputError, match="holds runs on the built-in data set"):
        resolve("--dataset", spec, "--train", "t", "--val", "t")


def test_summary_gives_mean_and_spread_over_seeds():
    rows = [
        {"model": f"student_qm_seed{i}", "AP": ap, "AP50": ap + 10} for i, ap in enumerate([10.0, 12.0, 14.0])
    ]
    rows.append({"model": "teacher_R18_FPN", "AP": 50.0, "AP50": 70.0})
    (entry,) = summarize(rows)
    assert entry == {"model": "student_qm", "seeds": 3, "AP_mean": 12.0, "AP_std": 2.0, "AP50_mean": 22.0,
                     "AP50_std": 2.0}  # fmt: skip


def test_estimate_times_every_stage_with_the_trainers_step_and_trains_nothing(tmp_path, monkeypatch, capsys):
    """``--estimate``: every stage of the chain timed with the trainer's own step and hooks (a QM stage
    with its teacher), the students once per seed, and no output folder."""
    from quant_mimic.engine import Trainer
    from quant_mimic_tools.pipeline import main

    calls = []

    def counted(name):
        method = getattr(Trainer, name)
        return lambda self: calls.append(name) or method(self)

    for name in ("run_step", "after_step"):
        monkeypatch.setattr(Trainer, name, counted(name))
    out, record = tmp_path / "main", tmp_path / "estimate.json"
    main(["--smoke", "--estimate", "--estimate-steps", "2", "--estimate-warmup", "1", "--seeds", "0", "1",
          "--output-dir", str(out), "--json", str(record), "MODEL.DEVICE", "cpu"])  # fmt: skip
    estimate = json.loads(record.read_text())
    assert [s["config"] for s in estimate["stages"]] == [
        "shapes/teacher_R18_2_FPN.yaml",
        "shapes/teacher_R18_2_FPN_quant.yaml",
        "shapes/student_R18_16_FPN_scratch.yaml",
        "shapes/mimic_R18_16_FPN.yaml",
        "qm_R_tiny_FPN.yaml",
    ]
    assert calls == ["run_step", "after_step"] * 5 * 3  # 1 untimed + 2 timed steps per stage
    for stage in estimate["stages"]:
        assert stage["s_per_iter"] > 0 and stage["s_per_test_image"] > 0
        assert stage["max_iter"] == 6 and stage["evaluations"] == 1 and stage["train_size"] == [192, 192]
    assert estimate["seeds"] == 2 and estimate["hours"] == round(
        sum(s["hours"] for s in estimate["stages"]), 2
    )
    assert "Estimated main job" in capsys.readouterr().out and not out.exists()


@pytest.mark.slow
def test_smoke_main_job_writes_the_results_and_reuses_finished_stages(tmp_path, datasets_root):
    run = run_pipeline(tmp_path, datasets_root)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["model"] for r in results["runs"]] == STAGES
    for row in results["runs"]:
        # every stage detects something (a run without any detection has AP NaN, written as null) ...
        assert row["AP"] is not None and 0.0 <= row["AP"] <= 100.0, row
        assert os.path.isfile(row["checkpoint"])
    for row in results["runs"][:2]:  # ... and the teachers, full precision and quantized, find objects
        assert row["AP"] > 0 and row["AP50"] > 0, row
    table = (tmp_path / "results.md").read_text()
    assert all(f"| {name} |" in table for name in STAGES)
    assert (tmp_path / "student_qm_seed0" / "student_final.pth").is_file()
    check_report(tmp_path / "report")

    again = run_pipeline(tmp_path, datasets_root)
    assert again.returncode == 0
    assert again.stdout.count("done already") == len(STAGES)
