"""Every shipped config parses, names an existing teacher config, and builds its model."""

from __future__ import annotations

import os

import pytest
from conftest import CONFIGS
from detectron2.modeling import build_model

from quant_mimic.config import build_config, default_num_workers, load_teacher_config
from quant_mimic.errors import QuantMimicInputError

ALL_CONFIGS = sorted(
    p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml") if not p.name.startswith("Base")
)


def test_the_configs_users_type_exist():
    assert "qm_R_tiny_FPN.yaml" in ALL_CONFIGS
    for family in [
        "teacher_R18_FPN",
        "teacher_R18_FPN_quant",
        "student_R18_16_FPN_scratch",
        "mimic_R18_16_FPN",
    ]:
        assert f"shapes/{family}.yaml" in ALL_CONFIGS and f"voc/{family}.yaml" in ALL_CONFIGS


def width_divisor(cfg) -> int:
    """The backbone's width divisor (VGG or ResNet)."""
    vgg = "vgg" in cfg.MODEL.BACKBONE.NAME
    return cfg.MODEL.VGG.WIDTH_DIVISOR if vgg else cfg.MODEL.RESNETS.WIDTH_DIVISOR


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_config_builds(name):
    cfg = build_config(str(CONFIGS / name))
    assert cfg.OUTPUT_DIR.startswith("output/")
    if cfg.MODEL.META_ARCHITECTURE == "QuantMimicRCNN":
        assert os.path.isfile(cfg.MODEL.QUANT_MIMIC.TEACHER_CONFIG)
        teacher = load_teacher_config(cfg)
        assert teacher.MODEL.ROI_HEADS.NUM_CLASSES == cfg.MODEL.ROI_HEADS.NUM_CLASSES
        assert width_divisor(teacher) < width_divisor(cfg)  # a bigger teacher
    else:
        model = build_model(cfg)
        assert model.roi_heads.num_classes == cfg.MODEL.ROI_HEADS.NUM_CLASSES


PAPER_CONFIGS = [name for name in ALL_CONFIGS if name.startswith(("wider_face/", "voc/"))]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_builds_its_model_on_cpu(name):
    cfg = build_config(str(CONFIGS / name))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    heads = model.student.roi_heads if cfg.MODEL.META_ARCHITECTURE == "QuantMimicRCNN" else model.roi_heads
    assert heads.num_classes == cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if name.startswith("wider_face/"):
        assert type(heads).__name__ == "RFCNROIHeads" and cfg.INPUT.FORMAT == "L"


@pytest.mark.parametrize("cores, workers", [(1, 1), (2, 1), (6, 3), (16, 8), (64, 8)])
def test_data_loader_workers_follow_the_device_and_the_cores_unless_set(monkeypatch, cores, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert default_num_workers("cuda") == default_num_workers("cuda:1") == workers
    assert default_num_workers("cpu") == 0  # on the CPU the batches are loaded in the training process
    config = str(CONFIGS / "qm_R_tiny_FPN.yaml")
    gpu = build_config(config, ["MODEL.DEVICE", "cuda"], cpu_fallback=False)
    assert gpu.DATALOADER.NUM_WORKERS == workers
    assert build_config(config, ["MODEL.DEVICE", "cpu"]).DATALOADER.NUM_WORKERS == 0
    assert (
        build_config(config, ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "3"]).DATALOADER.NUM_WORKERS
        == 3
    )


def test_a_device_torch_does_not_know_is_refused_in_one_sentence():
    config = str(CONFIGS / "qm_R_tiny_FPN.yaml")
    with pytest.raises(
        QuantMimicInputError, match=r"^MODEL.DEVICE 'gpu' is not a device torch knows: use cpu"
    ):
        build_config(config, ["MODEL.DEVICE", "gpu"])
