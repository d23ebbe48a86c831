"""The study command (quant_mimic_tools.study): its arms and runs, the statistics, the schedule record,
and the tables and figure it writes from finished runs (fabricated metrics.json: no training here; the
README shows a real smoke run)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from quant_mimic.errors import QuantMimicInputError
from quant_mimic_tools import study


def fake_run(folder: Path, aps: list[float], period: int = 250) -> None:
    """A finished run whose evaluations gave ``aps`` at period, 2 x period, ..."""
    folder.mkdir(parents=True)
    rows = []
    for i, ap in enumerate(aps, 1):
        rows.append({"iteration": i * period - 1, "total_loss": 1.0 / i})
        rows.append({"iteration": i * period - 1, "bbox/AP": ap, "bbox/AP50": 2 * ap})
    (folder / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows))
    (folder / "model_final.pth").write_bytes(b"")


def test_the_standard_deviation_of_runs_with_no_detections_is_nan():
    assert study.sample_std([1.0, 2.0, 4.0]) == pytest.approx(1.5275252, abs=1e-6)
    assert math.isnan(study.sample_std([math.nan, 2.0])) and math.isnan(study.sample_std([math.nan] * 2))


def test_t_interval_equals_the_hand_computed_interval():
    mean, low, high = study.t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) * s / sqrt(n)
    assert mean == 3.0
    assert low == pytest.approx(3.0 - half, abs=1e-9) and high == pytest.approx(3.0 + half, abs=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        study.t_interval([1.0])


def test_every_arm_gets_its_seeds_its_teacher_and_the_schedule(tmp_path):
    seeds = {True: [0, 1, 2, 3, 4], False: [7, 8]}
    schedule = study.schedule_opts(2000, 250)
    stages = study.student_stages(list(study.ARMS), seeds, tmp_path / "out", tmp_path / "teachers", schedule)
    by_name = {s.name: s for s in stages}
    assert len(by_name) == len(stages) == 3 * 5 + (len(study.ARMS) - 3) * 2
    assert {"scratch_seed4", "mimic_seed0", "qm_seed3", "qm_pow2_seed8", "quant_only_seed7"} <= set(by_name)
    assert "qm_pow2_seed0" not in by_name  # ablations run on their own seeds
    names = [s.name for s in stages]  # seed-major: a study stopped part-way holds same-seed comparisons
    assert names[:6] == [
        "scratch_seed0",
        "mimic_seed0",
        "qm_seed0",
        "scratch_seed1",
        "mimic_seed1",
        "qm_seed1",
    ]
    assert names[15:17] == ["qm_teacher_only_seed7", "quant_only_seed7"]  # ablations after the main ones

    def opt(stage, key):
        return stage.opts[stage.opts.index(key) + 1] if key in stage.opts else None

    quant = str(tmp_path / "teachers" / "teacher_R18_2_FPN_quant" / "model_final.pth")
    full = str(tmp_path / "teachers" / "teacher_R18_2_FPN" / "model_final.pth")
    assert opt(by_name["qm_seed0"], "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS") == quant
    assert opt(by_name["mimic_seed0"], "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS") == full
    assert opt(by_name["scratch_seed0"], "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS") is None
    assert opt(by_name["mimic_no_relu_seed7"], "MODEL.QUANT_MIMIC.FEATURE_RELU") == "False"
    assert opt(by_name["qm_as_written_seed8"], "MODEL.QUANT_MIMIC.NORMALIZE") == "as_written"
    for stage in stages:
        assert opt(stage, "SOLVER.MAX_ITER") == "2000" and opt(stage, "SOLVER.STEPS") == "(1600,)"
        assert (
            opt(stage, "TEST.EVAL_PERIOD") == "250" and opt(stage, "SEED") == stage.name.rsplit("seed", 1)[1]
        )


def test_the_summary_gives_per_seed_ap_flatness_and_paired_intervals(tmp_path):
    scratch = {0: [10.0, 20.0, 20.5], 1: [11.0, 21.0, 23.0], 2: [9.0, 18.0, 19.0]}
    for seed, aps in scratch.items():
        fake_run(tmp_path / f"scratch_seed{seed}", aps)
        fake_run(tmp_path / f"mimic_seed{seed}", [a + 1 for a in aps[:-1]] + [aps[-1] + 1 + seed])
    fake_run(tmp_path / "qm_seed0", [5.0, 30.0])  # qm: one seed only, so no interval for it
    arms = [a for a in study.ARMS if a.main]
    summary = study.summarize(tmp_path, arms, {True: [0, 1, 2], False: []})
    s = summary["arms"]["scratch"]
    assert {k: r["AP"] for k, r in s["runs"].items()} == {0: 20.5, 1: 23.0, 2: 19.0}
    assert [r["flat"] for r in s["runs"].values()] == [True, False, False]
    assert s["mean"] == pytest.approx(62.5 / 3) and s["std"] == pytest.approx(2.0207259, abs=1e-6)
    pair = summary["pairs"]["mimic-scratch"]
    assert pair["differences"] == [1.0, 2.0, 3.0] and pair["mean"] == 2.0
    low, high = pair["ci95"]
    assert (low, high) == pytest.approx(study.t_interval([1.0, 2.0, 3.0])[1:])
    assert summary["pairs"]["qm-mimic"] == {"seeds": [0], "differences": [30.0 - 21.5]}
    text = study.markdown(summary, {"max_iter": 750, "eval_period": 250})
    assert "| scratch |" in text and "0: 20.5, 1: 23.0, 2: 19.0" in text and "| 1/3 |" in text
    assert f"[{low:.2f}, {high:.2f}]" in text


def test_ablations_are_reported_against_their_reference_beside_the_papers_difference(tmp_path):
    for seed in (0, 1, 2):
        fake_run(tmp_path / f"qm_seed{seed}", [30.0, 40.0 + seed])
    fake_run(tmp_path / "qm_pow2_seed0", [30.0, 38.0])
    fake_run(tmp_path / "qm_pow2_seed1", [30.0, 41.5])
    fake_run(tmp_path / "qm_lambda10_seed0", [30.0, 35.0])  # its reference has seed 0 too
    fake_run(tmp_path / "qm_as_written_seed0", [0.1, math.nan])  # no detections: COCO's AP is NaN
    fake_run(tmp_path / "qm_as_written_seed1", [math.nan, math.nan])  # two such seeds: no std either
    summary = study.summarize(tmp_path, list(study.ARMS), {True: [0, 1, 2], False: [0, 1]})
    as_written = summary["arms"]["qm_as_written"]
    assert math.isnan(as_written["mean"]) and math.isnan(as_written["std"])
    pow2 = summary["ablations"]["qm_pow2"]
    assert pow2["reference"] == "qm" and pow2["seeds"] == [0, 1]
    assert pow2["differences"] == [-2.0, 0.5] and pow2["mean"] == -0.75
    assert pow2["paper_differences"] == pytest.approx([-0.9, -2.6, -1.0])
    assert summary["ablations"]["qm_lambda10"]["differences"] == [-5.0]
    assert summary["ablations"]["mimic_no_relu"]["seeds"] == []  # no runs: listed, not invented
    text = study.markdown(summary, {"max_iter": 750, "eval_period": 250})
    assert (
        "| qm_pow2 | qm | -0.8 (0, 1) | -0.9 / -2.6 / -1.0 | 73.0 / 59.5 / 26.6 against 73.9 / 62.1 / 27.6"
        in text
    )
    assert "| qm_lambda10 | qm | -5.0 (0) | -2.9 | 44.1 against 47.0, VOC07 test mAP (Table 8) |" in text
    assert "| mimic_no_relu | mimic | - | - | not in the paper" in text
    assert (
        "| qm_as_written | qm | no detections (0, 1) | - |" in text
        and "| 2 | 0: no detections, 1: no detections | - | - | 0/2 |" in text
    )


def test_the_curves_figure_is_written(tmp_path):
    for seed in (0, 1):
        fake_run(tmp_path / f"qm_seed{seed}", [5.0 + seed, 20.0, 25.0])
        fake_run(tmp_path / f"qm_as_written_seed{seed}", [0.1, math.nan, math.nan])  # no detections
    path = study.ap_curves(tmp_path, list(study.ARMS), {True: [0, 1], False: [0]}, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_a_different_schedule_on_the_same_folder_is_refused_and_the_record_kept(tmp_path):
    schedule = {"max_iter": 2000, "eval_period": 250, "lr_step": 1600, "smoke": False}
    study.check_schedule(tmp_path, dict(schedule))
    before = (tmp_path / "study.json").read_text()
    for other in ({"lr_step": 3200, "max_iter": 4000}, {"eval_period": 100}, {"max_iter": 1500}):
        with pytest.raises(QuantMimicInputError, match="schedule"):
            study.check_schedule(tmp_path, {**schedule, **other})
        assert (tmp_path / "study.json").read_text() == before
    study.check_schedule(tmp_path, dict(schedule))  # same: fine


def test_a_larger_max_iter_with_the_same_step_extends_the_study(tmp_path):
    # a record from before --lr-step: its step was 80% of its max_iter
    (tmp_path / "study.json").write_text(
        json.dumps({"schedule": {"max_iter": 2000, "eval_period": 250, "smoke": False}})
    )
    extended = {"max_iter": 2500, "eval_period": 250, "lr_step": 1600, "smoke": False}
    study.check_schedule(tmp_path, extended)
    recorded = json.loads((tmp_path / "study.json").read_text())["schedule"]
    assert recorded == {**extended, "extended_from": 2000}
    again = {"max_iter": 2500, "eval_period": 250, "lr_step": 1600, "smoke": False}
    study.check_schedule(tmp_path, again)  # the extended study, run again: still extended from 2000
    assert json.loads((tmp_path / "study.json").read_text())["schedule"]["extended_from"] == 2000
    assert study.schedule_opts(2500, 250, 1600)[:4] == ["SOLVER.MAX_ITER", "2500", "SOLVER.STEPS", "(1600,)"]


def test_report_only_keeps_the_studys_recorded_schedule(tmp_path):
    schedule = {"max_iter": 2000, "eval_period": 250, "lr_step": 1600, "smoke": False, "teachers": "t"}
    (tmp_path / "study.json").write_text(json.dumps({"schedule": schedule}))
    for seed in (0, 1):
        fake_run(tmp_path / f"scratch_seed{seed}", [40.0, 50.0 + seed])
    study.main(["--report-only", "--output-dir", str(tmp_path), "--teachers", "/elsewhere", "--max-iter", "750",
                "--only", "main", "--seeds", "0", "1"])  # fmt: skip
    record = json.loads((tmp_path / "study.json").read_text())
    assert record["schedule"] == schedule and record["arms"]["scratch"]["mean"] == 50.5
    assert (tmp_path / "study.md").read_text().startswith("# Study (fpn): 2000 iterations per student")


def test_a_finished_run_short_of_an_extended_schedule_resumes(tmp_path, monkeypatch, capsys):
    from quant_mimic_tools import runner

    fake_run(tmp_path / "qm_seed0", [50.0, 60.0], period=1000)  # finished at 2000 iterations
    (tmp_path / "qm_seed0" / "last_checkpoint").write_text("model_final.pth")
    stage = study.Stage("qm_seed0", "qm_R_tiny_FPN.yaml", "QM", ["SOLVER.MAX_ITER", "2500"])
    commands = []

    class Training:  # train_net.py resuming: two more evaluations, the last at iteration 2500
        def __init__(self, cmd, **kwargs):
            commands.append(cmd)
            with open(tmp_path / "qm_seed0" / "metrics.json", "a") as f:
                for it, ap in ((2249, 61.0), (2499, 61.5)):
                    f.write("\n" + json.dumps({"iteration": it, "bbox/AP": ap, "bbox/AP50": 80.0}))
            self.stdout, self.returncode = iter(["[eta: 0:00:01]\n"]), 0

        def wait(self):
            return 0

    monkeypatch.setattr(runner.subprocess, "Popen", Training)
    done = runner.run_stage(stage, tmp_path, [], 1, 1, until=2000)  # its own schedule: done
    assert done["bbox/AP"] == 60.0 and commands == []
    extended = runner.run_stage(stage, tmp_path, [], 1, 1, until=2500)
    assert extended["bbox/AP"] == 61.5 and len(commands) == 1 and "--resume" in commands[0]
    assert "extending it to 2500 iterations" in capsys.readouterr().out
    assert runner.run_stage(stage, tmp_path, [], 1, 1, until=2500)["bbox/AP"] == 61.5  # done now
    assert len(commands) == 1


def test_dry_run_prints_the_teachers_then_every_student(tmp_path, capsys):
    study.main(["--dry-run", "--output-dir", str(tmp_path / "s"), "--teachers", str(tmp_path / "t"),
                "--seeds", "0", "1", "--ablation-seeds", "0", "--only", "main"])  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + 3 * 2
    assert "teacher_R18_2_FPN.yaml" in lines[0] and "teacher_R18_2_FPN_quant.yaml" in lines[1]
    assert all("train_net.py" in line and "SOLVER.MAX_ITER 2000" in line for line in lines[2:])
    assert not (tmp_path / "s").exists()  # a dry run writes nothing
    with pytest.raises(SystemExit):
        study.main(["--max-iter", "100", "--eval-period", "80", "--dry-run"])


def test_by_default_the_study_trains_its_own_teachers_on_the_students_schedule(tmp_path, capsys):
    out = tmp_path / "s"
    study.main(["--dry-run", "--output-dir", str(out), "--seeds", "0", "--only", "main"])
    lines = capsys.readouterr().out.strip().splitlines()
    teacher, quant, *students = lines
    assert f"OUTPUT_DIR {out / 'teachers' / 'teacher_R18_2_FPN'}" in teacher
    assert "SOLVER.MAX_ITER 2000" in teacher and "SOLVER.STEPS (1600,)" in teacher  # as long as its students
    assert "SOLVER.MAX_ITER" not in quant  # the Q fine-tuning keeps its config's iterations
    assert f"MODEL.WEIGHTS {out / 'teachers' / 'teacher_R18_2_FPN' / 'model_final.pth'}" in quant
    qm = next(line for line in students if "qm_seed0" in line)
    assert f"TEACHER_WEIGHTS {out / 'teachers' / 'teacher_R18_2_FPN_quant' / 'model_final.pth'}" in qm


def test_jobs_run_side_by_side_with_their_share_and_failures_are_named_at_the_end(tmp_path, monkeypatch):
    import threading

    stages = [study.Stage(f"run{i}", "c.yaml", "d", []) for i in range(4)]
    calls, running, peak, lock = [], [0], [0], threading.Lock()
    both_started = threading.Barrier(2, timeout=10)

    def fake_stage(stage, output, extra, index, total, job=None, tag=False, until=None):
        assert until == 2000  # each run is done only once it reached the study's schedule
        with lock:
            calls.append((stage.name, list(extra), job.env()["OMP_NUM_THREADS"], tag, index, total))
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if stage.name in ("run0", "run1"):
            both_started.wait()  # the first two must be in flight at the same time
        with lock:
            running[0] -= 1
        if stage.name == "run2":
            raise SystemExit("Stage run2 failed (exit 1); its log is run2.log.")
        return {}

    monkeypatch.setattr(study, "run_stage", fake_stage)
    monkeypatch.setattr(study, "default_num_workers", lambda: 8)
    monkeypatch.setattr(study, "available_cores", lambda: 16)
    with pytest.raises(SystemExit, match=r"1 of 4 runs failed:\nrun2: Stage run2 failed"):
        study.run_students(stages, tmp_path, ["SOLVER.MAX_ITER", "6"], 3, 6, jobs=2, until=2000)
    assert sorted(c[0] for c in calls) == ["run0", "run1", "run2", "run3"]  # the failure stopped no other run
    assert peak[0] == 2
    for name, extra, threads, tag, index, total in calls:
        # the data workers' share first, so that the user's overrides after it win
        assert extra == ["DATALOADER.NUM_WORKERS", "4", "SOLVER.MAX_ITER", "6"]
        assert threads == "8" and tag and total == 6 and index == 3 + int(name[-1])


def test_the_single_level_screening_goes_seed_by_seed_with_fitted_stride_teachers(tmp_path, capsys):
    out = tmp_path / "s"
    study.main(["--architecture", "single", "--dry-run", "--output-dir", str(out), "--seeds", "0", "1",
                "--ablation-seeds", "0", "1", "--arms", "scratch", "qm", "qm_k8"])  # fmt: skip
    teacher, quant, quant_k8, *students = capsys.readouterr().out.strip().splitlines()
    teachers = out / "teachers"
    assert "teacher_R18_2_single.yaml" in teacher and "SOLVER.MAX_ITER 2000" in teacher
    assert f"MODEL.WEIGHTS {teachers / 'teacher_R18_2_single' / 'model_final.pth'}" in quant_k8
    assert "MODEL.QUANTIZER.STRIDE_CODES 8" in quant_k8 and "STRIDE_CODES" not in quant
    assert f"OUTPUT_DIR {teachers / 'teacher_R18_2_single_quant_k8'}" in quant_k8  # k4 / k16: not asked for
    names = [line.rsplit("OUTPUT_DIR ", 1)[1].rsplit("/", 1)[1] for line in students]
    assert names == ["scratch_seed0", "qm_seed0", "qm_k8_seed0", "scratch_seed1", "qm_seed1", "qm_k8_seed1"]
    qm_k8 = students[2]  # the student reads the teacher run's config.yaml, which records the fitted stride
    k8_run = teachers / "teacher_R18_2_single_quant_k8"
    assert f"TEACHER_WEIGHTS {k8_run / 'model_final.pth'}" in qm_k8
    assert f"TEACHER_CONFIG {k8_run / 'config.yaml'}" in qm_k8 and "qm_R18_16_single.yaml" in qm_k8
    with pytest.raises(SystemExit):
        study.main(["--architecture", "single", "--arms", "qm_pow2", "--dry-run"])  # an FPN-only arm


def test_a_study_folder_keeps_its_architecture(tmp_path):
    schedule = {"max_iter": 2000, "eval_period": 250, "lr_step": 1600, "smoke": False}
    study.check_schedule(tmp_path, dict(schedule))  # a record without the key: the FPN study
    study.check_schedule(tmp_path, {**schedule, "architecture": "fpn"})
    with pytest.raises(QuantMimicInputError, match="schedule"):
        study.check_schedule(tmp_path, {**schedule, "architecture": "single"})


def test_the_difference_curve_pairs_seeds_at_every_common_evaluation(tmp_path):
    arms = {a.name: a for a in study.SINGLE_ARMS}
    for seed, (qm, mimic) in enumerate(
        [([30.0, 40.0, 50.0], [32.0, 41.0, 49.0]), ([20.0, 30.0, 44.0], [21.0, 30.0, 40.0])]
    ):
        fake_run(tmp_path / f"qm_seed{seed}", qm)
        fake_run(tmp_path / f"mimic_seed{seed}", mimic)
    points = study.difference_curve(tmp_path, arms["qm"], arms["mimic"], {True: [0, 1], False: []})
    assert [p[0] for p in points] == [249, 499, 749]
    assert [p[1] for p in points] == pytest.approx(
        [-1.5, -0.5, 2.5]
    )  # (-2 - 1) / 2, (-1 + 0) / 2, (1 + 4) / 2
    mean, low, high = study.t_interval([1.0, 4.0])
    assert points[-1][1:] == pytest.approx((mean, low, high))
    assert study.difference_figure(tmp_path, [(arms["qm"], arms["mimic"])], {True: [0, 1], False: []},
                                   tmp_path / "d.png").stat().st_size > 0  # fmt: skip


def test_test_split_tables_read_each_runs_test_record_and_the_test_evaluation_writes_it(
    tmp_path, monkeypatch
):
    import subprocess

    arms = [a for a in study.SINGLE_ARMS if a.name in ("scratch", "qm")]
    for seed in (0, 1):
        fake_run(tmp_path / f"scratch_seed{seed}", [40.0, 41.0])
        fake_run(tmp_path / f"qm_seed{seed}", [45.0, 46.0])
        (tmp_path / f"qm_seed{seed}" / "student_config.yaml").write_text("")
        (tmp_path / f"qm_seed{seed}" / "student_final.pth").write_bytes(b"")
    calls = []

    def fake_eval(cmd, **kwargs):
        calls.append(cmd)
        ap = 30.0 + len(calls)
        out = f"copypaste: AP,AP50,AP75\ncopypaste: {ap},{ap + 20},{ap + 5}\n"
        return subprocess.CompletedProcess(cmd, 0, out, "")

    monkeypatch.setattr(subprocess, "run", fake_eval)
    seeds = {True: [0, 1], False: [0, 1]}
    study.evaluate_on_test(tmp_path, arms, seeds, "quantmimic_shapes_test")
    study.evaluate_on_test(tmp_path, arms, seeds, "quantmimic_shapes_test")  # recorded: read once
    assert len(calls) == 4
    qm_call = next(c for c in calls if "qm_seed0" in c[c.index("MODEL.WEIGHTS") + 1])
    assert qm_call[qm_call.index("MODEL.WEIGHTS") + 1].endswith("student_final.pth")
    assert "--eval-only" in qm_call and "('quantmimic_shapes_test',)" in qm_call
    test = study.summarize(tmp_path, arms, seeds, study.PAIRS, split="test")
    val = study.summarize(tmp_path, arms, seeds, study.PAIRS)
    scratch_on_test = [r["AP"] for r in test["arms"]["scratch"]["runs"].values()]
    assert test["split"] == "test" and scratch_on_test == [31.0, 32.0]
    assert val["arms"]["scratch"]["mean"] == 41.0 and test["pairs"]["qm-scratch"]["differences"] == [2.0, 2.0]
    assert "AP on the test split" in study.markdown(test, {"max_iter": 500, "eval_period": 250})


def test_a_second_study_on_a_folder_in_use_is_refused_in_one_sentence(tmp_path, capsys):
    from quant_mimic.engine.run_lock import run_lock

    with run_lock(tmp_path, option="--output-dir"):
        with pytest.raises(SystemExit) as exit_:
            study.main(["--report-only", "--output-dir", str(tmp_path)])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and line.startswith(
        f"study: error: {tmp_path} is in use by another run (pid "
    )
    assert not (tmp_path / "study.md").exists()  # nothing written by the refused run


def test_records_hold_each_runs_small_files_and_the_teachers_fitted_stride(tmp_path):
    out, teachers, records = tmp_path / "s", tmp_path / "s" / "teachers", tmp_path / "records"
    fake_run(out / "qm_k8_seed0", [40.0, 41.0])
    (out / "qm_k8_seed0" / study.TEST_METRICS).write_text('{"bbox/AP": 39.0}')
    fake_run(teachers / "teacher_k8", [70.0])
    (teachers / "teacher_k8" / "config.yaml").write_text(
        "MODEL:\n  QUANTIZER:\n    ENABLED: true\n    STRIDE: 0.521981\n    STRIDE_CODES: 8\n"
    )
    (out / "study.json").write_text("{}")
    (out / "qm_seed1").mkdir()
    (out / "qm_seed1" / "metrics.json").write_text('{"iteration": 9}')  # unfinished: no model_final.pth
    assert study.quantizer_of(teachers / "teacher_k8") == {"stride": 0.521981, "stride_codes": 8}
    assert study.quantizer_of(out / "qm_k8_seed0") == {}  # no config.yaml, or not quantized
    study.export_records(out, teachers, ["teacher_k8"], ["qm_k8_seed0", "qm_seed1"], records)
    copied = sorted(str(p.relative_to(records)) for p in records.rglob("*") if p.is_file())
    assert copied == ["runs/qm_k8_seed0/metrics.json", f"runs/qm_k8_seed0/{study.TEST_METRICS}",
                      "runs/teacher_k8/config.yaml", "runs/teacher_k8/metrics.json", "study.json"]  # fmt: skip
