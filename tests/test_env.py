"""detectron2 imports, and a build without compiled ops says clearly what is missing."""

import importlib
import subprocess
import sys

import pytest

from quant_mimic.collect_env import collect_env_info, detectron2_source, missing_compiled_ops


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
        [sys.executable, "-m", "quant_mimic.collect_env"], capture_output=True, text=True, check=True
    ).stdout
    assert f"torch         {torch.__version__}" in out
    assert "detectron2    0." in out
    assert "missing ops" in out
    assert collect_env_info(short=True).count("\n") == 4
