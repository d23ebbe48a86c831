"""python -m quant_mimic_tools.benchmark with the smallest settings: it runs, and prints its ratios."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from quant_mimic.analysis import PARTS


@pytest.fixture(scope="module")
def benchmark(datasets_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark") / "cost.json"
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "quant_mimic_tools.benchmark", "--steps", "1", "--warmup", "0",
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


def test_inference_table_has_teacher_student_and_their_ratios(benchmark):
    stdout, results = benchmark
    rows = {
        line.split()[1]: line.split()[2:] for line in stdout.splitlines() if line.strip().startswith("128 ")
    }
    assert rows.keys() == {"teacher", "student", "teacher/student"}, stdout
    ratio = [float(v) for v in rows["teacher/student"]]
    assert len(ratio) == 4 + len(PARTS) and all(r > 0 for r in ratio), stdout  # params..total, parts
    params, _, gflops, total = ratio[:4]
    assert params > 10 and gflops > 10 and total > 0
    measured = results["infer"]["128"]
    assert gflops == pytest.approx(measured["teacher/student"]["gflops"], abs=0.006)
    assert measured["teacher"]["input_size"] == [128, 128]
