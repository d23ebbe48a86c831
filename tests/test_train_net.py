"""train_net.py end to end on CPU: training, checkpoints, --resume, --eval-only, GLOO, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from conftest import MINI_OPTS, STUDENT_CONFIG, copypaste_results, read_metrics, run_train_net


@pytest.fixture(scope="module")
def trained(datasets_root, tmp_path_factory):
    """A 40-iteration student run on the mini data set, its batches loaded in the training process (0
    workers): a checkpoint and an evaluation after iteration 20, another evaluation at the end."""
    out = tmp_path_factory.mktemp("student")
    opts = [*MINI_OPTS, "SOLVER.MAX_ITER", "40", "SOLVER.CHECKPOINT_PERIOD", "20", "TEST.EVAL_PERIOD", "20",
            "OUTPUT_DIR", str(out)]  # fmt: skip
    run = run_train_net(["--config-file", str(STUDENT_CONFIG), *opts], datasets_root)
    assert run.returncode == 0, run.stderr[-3000:]
    snapshot = tmp_path_factory.mktemp("snapshot") / "model_40.pth"  # --resume later replaces model_final
    shutil.copy(out / "model_final.pth", snapshot)
    return out, opts, run, snapshot


def test_training_lowers_loss_and_writes_checkpoints_and_logs(trained):
    out, _, _, _ = trained
    losses = [m["total_loss"] for m in read_metrics(out) if "total_loss" in m]
    assert len(losses) == 2 and losses[-1] < losses[0]
    for name in ["model_0000019.pth", "model_final.pth", "last_checkpoint", "config.yaml"]:
        assert (out / name).is_file(), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))  # TensorBoard
    assert [m["iteration"] for m in read_metrics(out) if "bbox/AP" in m] == [19, 40]


def test_resume_continues_from_the_last_checkpoint(trained, datasets_root):
    out, opts, _, _ = trained
    resumed = run_train_net(
        ["--config-file", str(STUDENT_CONFIG), "--resume", *opts, "SOLVER.MAX_ITER", "60"], datasets_root
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    iterations = [m["iteration"] for m in read_metrics(out) if "total_loss" in m]
    assert iterations == [19, 39, 59]  # resumed at 40, not restarted at 0
    assert f"Loading trainer from {out / 'model_final.pth'}" in (out / "log.txt").read_text()


def test_eval_only_reproduces_the_logged_ap(trained, datasets_root, tmp_path):
    _, opts, train_run, weights = trained
    logged = copypaste_results(train_run.stdout + train_run.stderr)
    run = run_train_net(
        ["--config-file", str(STUDENT_CONFIG), "--eval-only", *opts, "OUTPUT_DIR", str(tmp_path),
         "MODEL.WEIGHTS", str(weights)],
        datasets_root,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    evaluated = copypaste_results(run.stdout + run.stderr)
    assert evaluated.keys() == logged.keys()
    assert logged["AP50"] > 0  # a model that detects something, so the comparison means something
    for key in logged:  # APl is NaN: the data set has no COCO-large objects
        assert evaluated[key] == pytest.approx(logged[key], abs=1e-3, nan_ok=True), key


def test_two_gloo_processes_train(datasets_root, tmp_path):
    opts = [*MINI_OPTS, "SOLVER.MAX_ITER", "6", "OUTPUT_DIR", str(tmp_path), "TEST.EVAL_PERIOD", "0"]
    run = run_train_net(["--config-file", str(STUDENT_CONFIG), "--num-gpus", "2", *opts], datasets_root)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "model_final.pth").is_file()
    assert "bbox/AP" in read_metrics(tmp_path)[-1]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["DATASETS.TRAIN", "('voc_2007_trainval',)"], r"Dataset 'voc_2007_trainval' needs .*VOC2007, which is not there"),
        (["MODEL.NOT_A_KEY", "1"], r"Non-existent .*MODEL.NOT_A_KEY.*check the key's spelling"),
        (["--eval-only", "MODEL.WEIGHTS", "/no/such/model.pth"], r"MODEL.WEIGHTS file /no/such/model.pth does not exist"),
        (["DATASETS.TRAIN", "('no_such_dataset',)"], r"Dataset 'no_such_dataset' is not registered"),
    ],
)  # fmt: skip
def test_bad_input_gives_one_clear_sentence(extra, expected, datasets_root, tmp_path):
    flags = [a for a in extra if a.startswith("--")]  # flags go before the KEY VALUE overrides
    overrides = [a for a in extra if not a.startswith("--")]
    args = ["--config-file", str(STUDENT_CONFIG), *flags, *MINI_OPTS, "OUTPUT_DIR", str(tmp_path), *overrides]
    run = run_train_net(args, datasets_root)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert lines[0].startswith("train_net.py: error: ")
    assert re.search(expected, lines[0]), lines[0]


def test_a_new_run_refuses_to_overwrite_an_earlier_one(trained, datasets_root):
    out, opts, _, _ = trained
    before = {p.name: p.stat().st_mtime for p in out.iterdir()}
    run = run_train_net(["--config-file", str(STUDENT_CONFIG), *opts], datasets_root)
    assert run.returncode == 2
    assert "already holds a training run" in run.stderr and "--resume" in run.stderr
    assert {p.name: p.stat().st_mtime for p in out.iterdir()} == before


def test_the_deployed_model_reaches_the_eager_models_ap(trained, datasets_root, tmp_path, capsys):
    """The trained student's deployed form, evaluated on the same val set with the same evaluator: by
    ``quant_mimic_tools.evaluate_deployed`` (eager and deployed, one line each), and as a predictor whose
    ONNX Runtime graph served every image."""
    from conftest import registered_mini_shapes

    from quant_mimic.config import build_config
    from quant_mimic.deploy import DeployedPredictor, build_and_export
    from quant_mimic_tools import evaluate_deployed

    _, opts, train_run, weights = trained
    eager = copypaste_results(train_run.stdout + train_run.stderr)
    with registered_mini_shapes(datasets_root, "deployap_shapes") as names:
        val = next(n for n in names if n.endswith("_val"))
        overrides = [*opts, "DATASETS.TEST", f"('{val}',)"]
        record = tmp_path / "ap.json"
        evaluate_deployed.main(["--config-file", str(STUDENT_CONFIG), "--weights", str(weights), "--device", "cpu",
                                "--json", str(record), *overrides])  # fmt: skip
        cfg = build_config(
            str(STUDENT_CONFIG), [*overrides, "MODEL.WEIGHTS", str(weights), "MODEL.DEVICE", "cpu"]
        )
        predictor = DeployedPredictor(build_and_export(cfg, tmp_path / "deployed"))
        deployed = evaluate_deployed.coco_ap(predictor.as_module(), cfg)["bbox"]
        assert predictor.graphs.sessions and predictor.graphs.failure is None
    runs = json.loads(record.read_text())["runs"]
    assert list(runs) == [
        "eager",
        "deployed (onnxruntime_graph)",
    ]  # the CPU default: the whole detector in one graph
    assert runs["eager"]["AP"] == pytest.approx(eager["AP"], abs=0.05)
    assert "deployed (onnxruntime_graph)" in capsys.readouterr().out
    assert eager["AP50"] > 0
    for measured in (deployed, runs["deployed (onnxruntime_graph)"]):
        assert measured["AP"] == pytest.approx(eager["AP"], abs=0.3)
        assert measured["AP50"] == pytest.approx(eager["AP50"], abs=0.3)


def test_kill_9_then_resume_reaches_the_uninterrupted_runs_ap(trained, datasets_root, tmp_path):
    """Killed (SIGKILL) after its first checkpoint and resumed, a run ends with the same AP as the same
    run uninterrupted: the random states travel in the checkpoint and the data loader fast-forwards. The
    uninterrupted run evaluated at that checkpoint and the resumed one does not: with 0 data workers the
    augmentations draw from numpy's generator in the training process, which the evaluation must leave
    as it found it."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO, TRAIN_NET

    _, opts, train_run, _ = trained
    uninterrupted = copypaste_results(train_run.stdout + train_run.stderr)
    args = ["--config-file", str(STUDENT_CONFIG), *opts, "OUTPUT_DIR", str(tmp_path)]
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root), PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN_NET), *args], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    last = tmp_path / "last_checkpoint"
    while not (last.is_file() and last.read_text().strip() == "model_0000019.pth"):
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "model_final.pth").exists()  # killed mid-run
    resumed = run_train_net([*args[:2], "--resume", *args[2:]], datasets_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "skipping the 20 batches already trained on" in (tmp_path / "log.txt").read_text()
    final = copypaste_results(resumed.stdout + resumed.stderr)
    for key in ("AP", "AP50", "AP75"):
        assert final[key] == pytest.approx(uninterrupted[key], abs=1e-3), key
