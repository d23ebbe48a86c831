"""python -m quant_mimic_tools.benchmark with the smallest settings: it runs, and prints its ratios."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from quant_mimic.timing import PARTS


@pytest.fixture(scope="module")
def benchmark(datasets_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark") / "cost.json"
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "quant_mimic_tools.benchmark", "--steps", "1", "--warmup", "0", "--rounds", "2", "--infer-rounds", "2",
           "--batch", "1", "--threads", "1", "--repeats", "2", "--sizes", "128", "--json", str(out)]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out) as f:
        return run.stdout, json.load(f)


def test_training_ratios_are_printed(benchmark):
    stdout, results = benchmark
    ratios = [float(m) for m in re.findall(r"^QM .*= +([0-9.]+)", stdout, flags=re.M)]
    assert len(ratios) == 4 and all(r > 0 for r in ratios), stdout
    assert ratios[0] == pytest.approx(results["train"]["ratios"]["qm_over_scratch"], abs=0.006)
    for kind in ("scratch", "teacher_forward", "qm"):  # each kind ran once per round, taking turns
        run = results["train"][kind]
        assert run["rounds"] == 2 and run["median_s"] in run["round_medians_s"]


def test_inference_table_has_eager_and_deployed_runs_and_their_ratios(benchmark):
    stdout, results = benchmark
    rows = [line.split() for line in stdout.splitlines() if line.strip().startswith("128 ")]
    runs = {(r[1], r[2]) for r in rows if r[1] in ("teacher", "student")}
    assert {
        ("teacher", "eager"),
        ("student", "eager"),
        ("teacher", "torchscript"),
        ("student", "torchscript"),
        ("teacher", "onnxruntime_graph"),
        ("student", "onnxruntime_graph"),
    } <= runs
    for row in rows:  # a whole-detector graph is one call: its network parts print "-", not 0.0
        assert (row[5:8] == ["-", "-", "-"]) == (row[2] == "onnxruntime_graph"), row
    assert "128  graph rows: the whole detector in one call, timed as postproc" in stdout
    measured = results["infer"]["shapes"]["128"]
    for name in ("teacher", "student"):
        eager = measured[name]["eager"]
        assert eager["input_size"] == [128, 128] and eager["gflops"] > 0
        for kind, run in measured[name].items():
            parts = sum(run["latency_ms"][p] for p in PARTS)
            assert run["latency_ms"]["total"] > 0 and parts <= run["latency_ms"]["total"] * 1.05, kind
    ratios = measured["ratios"]
    assert ratios["gflops_teacher/student"] > 10
    printed = float(re.search(r"GFLOPs teacher / student +([0-9.]+)", stdout).group(1))
    assert printed == pytest.approx(ratios["gflops_teacher/student"], abs=0.006)
    ms = lambda name, kind: measured[name][kind]["latency_ms"]["total"]  # noqa: E731
    best = ratios["best_deployed"]
    assert ratios["eager_student/deployed_student"] == pytest.approx(
        ms("student", "eager") / ms("student", best["student"])
    )
    assert 0 < ratios["student_share_outside_backbone"] < 1
    eager = measured["student"]["eager"]  # the FLOPs of the RPN and box heads, beside their time
    assert 0 < eager["backbone_gflops"] < eager["gflops"]
    share = float(re.search(r"student GFLOPs outside backbone\+FPN +([0-9.]+)%", stdout).group(1))
    assert share == pytest.approx(100 * (1 - eager["backbone_gflops"] / eager["gflops"]), abs=0.06)
    for name in ("teacher", "student"):  # the ways to run took turns over 2 rounds; each its median round
        for kind, run in measured[name].items():
            assert (
                len(run["round_totals_ms"]) == 2 and run["latency_ms"]["total"] in run["round_totals_ms"]
            ), kind
    # a whole-detector graph has no backbone lap: its backbone network was timed alone in the same rounds
    alone = measured["backbone_alone_ms"]
    assert set(alone) == {"teacher", "student"} and 0 < alone["student"] < alone["teacher"]
    if best["student"] == "onnxruntime_graph":
        backbone = alone["student"]
        assert "backbone: its network alone, in the same rounds" in stdout
    else:  # a run one network at a time has its own backbone lap
        backbone = measured["student"][best["student"]]["latency_ms"]["backbone"]
    assert ratios["student_share_outside_backbone"] == pytest.approx(
        1 - backbone / ms("student", best["student"])
    )
