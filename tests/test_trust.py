"""Fault injection: runs and artifacts a user can trust.

One run per folder (a second run on a locked folder exits 2 naming the first), checkpoints / metrics.json /
deployed folders written whole (a full disk, made by a patched ``quant_mimic.atomic.write_bytes``, ends
in one sentence with exit 2 and leaves only complete files under their final names), Ctrl-C in training
(exit 130, one line naming the iteration and the checkpoint ``--resume`` continues from), and deployed
folders that check themselves against their manifest.

Trainings run in this process (``train_net.cli``) on the mini data set, a few iterations each; the only
subprocess is the run that receives SIGINT.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import PROJECT, REPO, STUDENT_CONFIG, TRAIN_NET, registered_mini_shapes
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

import quant_mimic.atomic
from quant_mimic.config import build_config
from quant_mimic.deploy import DeployedPredictor, export_deployed
from quant_mimic.deploy.runtime import MANIFEST_FILE, DeployedFolderError, check_manifest
from quant_mimic.engine.run_dir import read_checkpoint
from quant_mimic.engine.run_lock import run_lock
from quant_mimic_tools.deploy import main as deploy_main

DATA = "trust_shapes"


def load_script(name: str, path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_net():
    return load_script("trust_train_net", TRAIN_NET)


@pytest.fixture(scope="module")
def mini(datasets_root):
    """The mini data set registered in this process as trust_shapes_{train,val,test} (the files the
    subprocess runs use too)."""
    with registered_mini_shapes(datasets_root / "quantmimic_shapes_mini", DATA):
        yield


def train_args(output_dir: Path, *extra: str, flags: tuple[str, ...] = ()) -> list[str]:
    return ["--config-file", str(STUDENT_CONFIG), *flags,
            "DATASETS.TRAIN", f"('{DATA}_train',)", "DATASETS.TEST", "()",
            "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS", "0",
            "SOLVER.CHECKPOINT_PERIOD", "2", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(output_dir), *extra]  # fmt: skip


def one_line(capsys, prog: str, code, expected_code: int = 2) -> str:
    """The single stderr line of a command that exited with ``expected_code`` (no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code, err[-3000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith(f"{prog}: "), lines[0]
    return lines[0]


def exit_code(function, *args) -> int:
    try:
        function(*args)
    except SystemExit as e:
        return e.code
    return 0


def assert_every_file_is_whole(folder: Path) -> None:
    """No temporary file is left; every checkpoint loads, last_checkpoint names one, metrics.json is whole
    JSON lines."""
    leftovers = [p.name for p in folder.rglob("*") if quant_mimic.atomic.TEMPORARY_INFIX in p.name]
    assert not leftovers, leftovers
    for path in folder.glob("*.pth"):
        assert read_checkpoint(str(path))[1] is None, path
    if (folder / "last_checkpoint").exists():
        named = folder / (folder / "last_checkpoint").read_text().strip()
        assert named.is_file() and read_checkpoint(str(named))[1] is None
    if (folder / "metrics.json").exists():
        text = (folder / "metrics.json").read_text()
        assert text == "" or text.endswith("\n")
        assert all(isinstance(json.loads(line), dict) for line in text.splitlines())


def full_disk(monkeypatch, name_starts: str, partial: bool = True) -> list[str]:
    """Make every write to a file whose name starts with ``name_starts`` fail with ENOSPC (after writing
    half of its bytes if ``partial``). Returns the list of names that failed."""
    real = quant_mimic.atomic.write_bytes
    failed = []

    def write_bytes(fd, data):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.lstrip(".").startswith(name_starts):
            failed.append(name)
            if partial:
                os.write(fd, bytes(memoryview(data)[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(quant_mimic.atomic, "write_bytes", write_bytes)
    return failed


# --- training: a full disk at a checkpoint and at metrics.json, then --resume; an unwritable folder ---


def test_a_full_disk_at_a_checkpoint_keeps_the_last_whole_one_and_resume_continues(
    train_net, mini, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    failed = full_disk(monkeypatch, "model_0000003.pth")
    code = exit_code(train_net.cli, train_args(out, "SOLVER.MAX_ITER", "4"))
    line = one_line(capsys, "train_net.py", code)
    assert failed, "the checkpoint of iteration 3 was not written through write_bytes"
    assert line.startswith(
        f"train_net.py: error: Cannot write {out / 'model_0000003.pth'}: the disk of {out} is full ("
    )
    assert f"--resume, which continues from {out / 'model_0000001.pth'}." in line, line
    assert not (out / "model_0000003.pth").exists()
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert_every_file_is_whole(out)

    monkeypatch.undo()  # space again: --resume continues from iteration 2
    code = exit_code(train_net.cli, train_args(out, "SOLVER.MAX_ITER", "4", flags=("--resume",)))
    assert code == 0, capsys.readouterr().err[-3000:]
    iterations = [json.loads(line)["iteration"] for line in (out / "metrics.json").read_text().splitlines()]
    assert iterations[-1] == 3
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 3
    assert_every_file_is_whole(out)


def test_a_full_disk_at_metrics_json_leaves_no_partial_line(train_net, mini, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    failed = full_disk(monkeypatch, "metrics.json")
    code = exit_code(train_net.cli, train_args(out, "SOLVER.MAX_ITER", "2"))
    line = one_line(capsys, "train_net.py", code)
    assert failed, "metrics.json was not written through write_bytes"
    assert line.startswith(
        f"train_net.py: error: Cannot write {out / 'metrics.json'}: the disk of {out} is full ("
    )
    assert f"continues from {out / 'model_final.pth'}" in line, line  # saved before the metrics
    assert (out / "metrics.json").read_bytes() == b""  # the half-written line was cut back
    assert_every_file_is_whole(out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_output_dir_is_one_sentence(train_net, mini, tmp_path, capsys):
    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o500)
    try:
        line = one_line(capsys, "train_net.py", exit_code(train_net.cli, train_args(out / "run")))
    finally:
        out.chmod(0o700)
    assert line.startswith(f"train_net.py: error: Cannot write {out / 'run'}")
    assert f"{out} is not writable" in line and "free" in line, line


# --- one run per folder, and Ctrl-C (the one subprocess) ---


def test_a_second_run_is_refused_and_ctrl_c_stops_the_first_with_a_whole_checkpoint(
    train_net, mini, datasets_root, tmp_path, capsys
):
    out = tmp_path / "run"
    args = train_args(out, "SOLVER.MAX_ITER", "1000", "DATASETS.TRAIN", "('quantmimic_shapes_mini_train',)")
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root), PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [sys.executable, str(TRAIN_NET), *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 240
        while not (out / "last_checkpoint").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "last_checkpoint").exists(), (
            proc.stderr.read() if proc.poll() is not None else "too slow"
        )

        second = train_args(out, "SOLVER.MAX_ITER", "4", flags=("--resume",))  # the same folder, here
        line = one_line(capsys, "train_net.py", exit_code(train_net.cli, second))
        assert line.startswith(f"train_net.py: error: {out} is in use by another run (pid {proc.pid} on "), (
            line
        )
        assert ", started at 20" in line and "wait for it to finish, or pass another OUTPUT_DIR." in line

        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err[-3000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    last = (out / "last_checkpoint").read_text()
    assert lines[0].startswith("train_net.py: interrupted at iteration "), lines[0]
    reached = int(lines[0].split("iteration ")[1].split(";")[0])
    assert lines[0].endswith(f"; --resume continues from {out / last}.")
    assert int(last[len("model_") : -len(".pth")]) < reached
    assert_every_file_is_whole(out)
    with run_lock(out):  # released by the interrupted run
        pass


# --- deployed folders ---


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A random-weight student: its config, model, checkpoint and deployed folder."""
    cfg = build_config(str(STUDENT_CONFIG), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    folder = tmp_path_factory.mktemp("trust_deploy")
    DetectionCheckpointer(model, save_dir=str(folder)).save("student")
    return cfg, model, folder / "student.pth", export_deployed(cfg, model, folder / "deployed")


def test_the_manifest_lists_every_file_with_its_size_and_sha256(student):
    deployed = student[3]
    manifest = json.loads((deployed / MANIFEST_FILE).read_text())
    files = sorted(p.name for p in deployed.iterdir() if p.name != MANIFEST_FILE)
    assert sorted(manifest["files"]) == files and "deploy.json" in files and "head.ts" in files
    assert manifest["files"]["head.ts"]["size"] == (deployed / "head.ts").stat().st_size
    assert manifest["written_by"].startswith("QuantMimic ") and manifest["format_version"] >= 2
    assert check_manifest(deployed) == manifest
    assert not [p for p in deployed.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def _damage(folder: Path, how: str) -> str:
    """Damage the deployed ``folder``; returns the file the error must name."""
    if how == "missing":
        (folder / "rpn_head.ts").unlink()
        return "rpn_head.ts"
    if how == "truncated":
        data = (folder / "head.ts").read_bytes()
        (folder / "head.ts").write_bytes(data[: len(data) // 2])
        return "head.ts"
    if how == "altered":
        data = bytearray((folder / "backbone.ts").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / "backbone.ts").write_bytes(bytes(data))
        return "backbone.ts"
    if how == "foreign":  # another network of the same folder under the head's name
        shutil.copy(folder / "rpn_head.ts", folder / "head.ts")
        return "head.ts"
    # deploy.json that a tool rewrote along with the manifest: checked on its own
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    text = '{"format_version": 2, "features": [' if how == "bad_json" else '{"format_version": 2}\n'
    (folder / "deploy.json").write_text(text)
    manifest["files"]["deploy.json"] = {
        "size": len(text.encode()),
        "sha256": quant_mimic.deploy.runtime.file_sha256(folder / "deploy.json"),
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return "deploy.json"


@pytest.mark.parametrize("how", ["missing", "truncated", "altered", "foreign", "bad_json", "incomplete_json"])
def test_a_damaged_deployed_folder_is_one_sentence_naming_the_file(student, how, tmp_path, capsys):
    folder = tmp_path / "deployed"
    shutil.copytree(student[3], folder)
    name = _damage(folder, how)
    with pytest.raises(DeployedFolderError, match="deploy again"):
        DeployedPredictor(folder)
    demo = load_script("trust_demo", PROJECT / "demo.py")
    code = exit_code(demo.main, ["--deployed", str(folder), "--input", str(tmp_path / "image.png")])
    line = one_line(capsys, "demo.py", code)
    assert line.startswith(f"demo.py: error: {folder / name} ") and line.endswith("deploy again."), line
    expected = {"missing": "is missing", "truncated": "bytes, not the", "altered": "does not match its sha256",
                "foreign": "bytes, not the", "bad_json": "is not valid JSON", "incomplete_json": "lacks features"}  # fmt: skip
    assert expected[how] in line, line


def test_a_full_disk_while_deploying_leaves_the_old_folder_and_nothing_partial(
    student, tmp_path, monkeypatch, capsys
):
    cfg, _, weights, deployed = student
    out = tmp_path / "deployed"
    shutil.copytree(deployed, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    failed = full_disk(monkeypatch, "head.ts")
    args = [
        "--config-file",
        str(STUDENT_CONFIG),
        "--weights",
        str(weights),
        "--output-dir",
        str(out),
        "--force",
    ]
    line = one_line(capsys, "deploy", exit_code(deploy_main, args))
    assert failed, "head.ts was not written through write_bytes"
    assert line == (
        f"deploy: error: Cannot write {out / 'head.ts'}: the disk of {out} is full "
        f"({quant_mimic.atomic.free_space(out)} free): free some space (or make the folder writable) and deploy again."
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old deployment, whole
    check_manifest(out)
    fresh = tmp_path / "fresh"
    args[args.index(str(out))] = str(fresh)
    line = one_line(capsys, "deploy", exit_code(deploy_main, args))
    assert "deploy again" in line and not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".deployed.lock", ".fresh.lock", "deployed"]


def test_a_second_deploy_to_the_same_folder_is_refused(student, tmp_path, capsys):
    _, _, weights, _ = student
    out = tmp_path / "deployed"
    with run_lock(out, "--output-dir", lock_file=tmp_path / ".deployed.lock"):
        args = ["--config-file", str(STUDENT_CONFIG), "--weights", str(weights), "--output-dir", str(out)]
        line = one_line(capsys, "deploy", exit_code(deploy_main, args))
    assert line.startswith(f"deploy: error: {out} is in use by another run (pid {os.getpid()} on "), line
    assert line.endswith("wait for it to finish, or pass another --output-dir.") and not out.exists()


def test_a_second_main_job_on_the_same_output_is_refused(tmp_path, capsys):
    from quant_mimic_tools.pipeline import JOB_RECORD
    from quant_mimic_tools.pipeline import main as pipeline_main

    out = tmp_path / "main"
    with run_lock(out, "--output-dir"):
        code = exit_code(pipeline_main, ["--smoke", "--output-dir", str(out)])
    line = one_line(capsys, "pipeline", code)
    assert line.startswith(f"pipeline: error: {out} is in use by another run (pid {os.getpid()} on "), line
    assert line.endswith("wait for it to finish, or pass another --output-dir.")
    assert not (out / JOB_RECORD).exists()
