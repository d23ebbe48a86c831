"""detectron2 imports, and a build without compiled ops says clearly what is missing; the set-up picks
its Python and refuses a full disk; the library never imports the commands."""

import ast
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import PROJECT, REPO

from quant_mimic_tools.collect_env import collect_env_info, detectron2_source, missing_compiled_ops


def test_detectron2_and_project_import():
    import detectron2
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY

    import quant_mimic  # noqa: F401

    assert detectron2.__version__.startswith("0.")
    assert "QuantMimicRCNN" in META_ARCH_REGISTRY._obj_map
    assert {"build_tiny_resnet_backbone", "build_tiny_resnet_fpn_backbone"} <= set(BACKBONE_REGISTRY._obj_map)


def _has_compiled_ops() -> bool:
    try:
        importlib.import_module("detectron2._C")
        return True
    except ImportError:
        return False


def test_missing_compiled_op_raises_one_clear_sentence():
    from detectron2.layers import deform_conv

    if _has_compiled_ops():  # a compiled detectron2 (e.g. upstream from GitHub) misses nothing
        assert missing_compiled_ops() == []
        return
    if importlib.util.find_spec("detectron2._missing_ops") is None:
        pytest.skip("an uncompiled detectron2 source tree: only the project's pure build has stand-in ops")

    with pytest.raises(
        RuntimeError, match="needs detectron2's compiled op `deform_conv_forward`.*install detectron2"
    ):
        _ = deform_conv._C.deform_conv_forward
    assert "deformable convolution" in missing_compiled_ops()
    assert "no compiled ops" in detectron2_source() or "without compiled ops" in detectron2_source()


def test_coco_evaluation_falls_back_to_pycocotools_when_fast_eval_is_missing():
    from detectron2.evaluation import coco_evaluation
    from pycocotools.cocoeval import COCOeval

    if not _has_compiled_ops():
        assert coco_evaluation.COCOeval_opt is COCOeval


def test_collect_env_reports_versions_and_missing_ops():
    import torch

    out = subprocess.run(
        [sys.executable, "-m", "quant_mimic_tools.collect_env"], capture_output=True, text=True, check=True
    ).stdout
    assert f"torch         {torch.__version__}" in out
    assert "detectron2    0." in out
    assert "missing ops" in out
    assert collect_env_info(short=True).count("\n") == 4


SETUP_ENV = REPO / "tools" / "setup_env.sh"


def fake_pythons(folder, working=(), broken=()):
    """Executables named python3.X in ``folder``: working ones exit 0 (as ``python -c "import venv"``
    does), broken ones exit 127 (as a pyenv shim of a version that is not selected)."""
    folder.mkdir(parents=True, exist_ok=True)
    for names, code in ((working, 0), (broken, 127)):
        for name in names:
            exe = folder / name
            exe.write_text(f"#!/bin/sh\nexit {code}\n")
            exe.chmod(0o755)
    return folder


def print_python(path, python=None) -> subprocess.CompletedProcess:
    """``bash tools/setup_env.sh --print-python`` with PATH = ``path`` only (no system Python)."""
    env = {"PATH": str(path)}
    if python is not None:
        env["PYTHON"] = str(python)
    return subprocess.run(
        [shutil.which("bash"), str(SETUP_ENV), "--print-python"], env=env, capture_output=True, text=True
    )


def test_setup_picks_the_newest_python_on_path(tmp_path):
    bin_dir = fake_pythons(tmp_path / "bin", working=["python3.10", "python3.12", "python3.9", "python3"])
    out = print_python(bin_dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(bin_dir / "python3.12")


def test_setup_skips_a_python_that_does_not_run(tmp_path):
    bin_dir = fake_pythons(tmp_path / "bin", working=["python3.11"], broken=["python3.13"])
    out = print_python(bin_dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(bin_dir / "python3.11")


def test_setup_takes_PYTHON_when_set(tmp_path):
    bin_dir = fake_pythons(tmp_path / "bin", working=["python3.13", "python3.12"])
    mine = fake_pythons(tmp_path / "mine", working=["python3.10"]) / "python3.10"
    out = print_python(bin_dir, python=mine)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(mine)

    out = print_python(bin_dir, python=tmp_path / "missing" / "python3")
    assert out.returncode == 2
    assert "PYTHON=" in out.stderr and "point it at a Python 3.10 to 3.13" in out.stderr


def test_setup_without_a_supported_python_names_what_to_install(tmp_path):
    bin_dir = fake_pythons(tmp_path / "bin", working=["python3.9", "python3"], broken=["python3.12"])
    out = print_python(bin_dir)
    assert out.returncode == 2
    assert out.stdout == ""
    assert "no working Python 3.10 to 3.13 on PATH: install one" in out.stderr
    assert out.stderr.count("\n") == 1  # one sentence


def setup_copy(folder):
    """The files ``tools/setup_env.sh`` reads before it installs anything, copied to ``folder`` (no .venv)."""
    for name in (
        "requirements.txt",
        "setup.cfg",
        "pyproject.toml",
        "tools/build_detectron2.py",
        "tools/setup_env.sh",
    ):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, folder / name)
    return folder / "tools" / "setup_env.sh"


def test_setup_without_the_disk_space_refuses_in_one_sentence_before_anything(tmp_path):
    script = setup_copy(tmp_path)
    env = dict(os.environ, QUANTMIMIC_SETUP_NEED_GB="1000000")  # more than any disk here
    out = subprocess.run([shutil.which("bash"), str(script)], env=env, capture_output=True, text=True)
    assert out.returncode == 2, out.stdout + out.stderr
    assert re.fullmatch(
        rf"set-up: only \d+ GB free on the disk of {re.escape(str(tmp_path))}, and a first set-up needs "
        r"about 1000000 GB \(torch and its libraries\): free some space and run it again\.\n",
        out.stderr,
    ), out.stderr
    assert out.stdout == "" and not (tmp_path / ".venv").exists()


def imported_modules(path) -> set[str]:
    """The top-level names of every import in a source file, lazy ones included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_library_never_imports_the_commands():
    library = sorted((PROJECT / "quant_mimic").rglob("*.py"))
    assert library
    offenders = [str(p.relative_to(PROJECT)) for p in library if "quant_mimic_tools" in imported_modules(p)]
    assert offenders == [], f"quant_mimic must not import quant_mimic_tools: {offenders}"
