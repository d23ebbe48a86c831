"""The quantizer stride fitted to the full-precision teacher (MODEL.QUANTIZER.STRIDE_CODES): its value,
and one number in the quantized teacher's fine-tuning, its evaluation, and a student's teacher and
mimic loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from conftest import CONFIGS, MINI_OPTS, STUDENT_CONFIG, run_train_net
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model
from torch import nn

from quant_mimic.config import build_config
from quant_mimic.data import MINI_SPEC
from quant_mimic.data.builtin import register_shapes_datasets
from quant_mimic.engine.stride_fit import positive_percentile, resolve_stride
from quant_mimic.errors import QuantMimicInputError

CODES = 8
FIT_IMAGES = 6


class KnownMaps(nn.Module):
    """A detector whose backbone returns two fixed maps, whatever the images."""

    def __init__(self, maps: dict[str, torch.Tensor]):
        super().__init__()
        self.maps = maps
        self.backbone = lambda images: self.maps

    def preprocess_image(self, inputs):
        return type("Images", (), {"tensor": torch.zeros(len(inputs), 3, 8, 8)})()


def test_positive_percentile_counts_positive_activations_of_every_map_and_batch():
    torch.manual_seed(0)
    maps = {"p2": torch.randn(1, 4, 6, 6) * 3, "p3": torch.randn(1, 4, 3, 3)}
    model = KnownMaps(maps)
    positives = np.concatenate([m[m > 0].numpy() for m in maps.values()] * 3)  # 3 batches of 1 image
    got = positive_percentile(model, [{}] * 3, 90.0, batch=1)
    assert got == pytest.approx(np.percentile(positives.astype(np.float64), 90.0), rel=1e-6)
    assert got > np.percentile(positives, 50.0)  # negatives were left out, not counted as 0
    with pytest.raises(QuantMimicInputError, match="no positive activation"):
        positive_percentile(KnownMaps({"p2": -maps["p2"].abs()}), [{}], 99.0)


@pytest.fixture(scope="module")
def fp_teacher(tmp_path_factory):
    """An untrained full-precision ResNet18-1-4 FPN teacher run: its folder holds model_final.pth and
    the config.yaml train_net.py would have written (quantizer off)."""
    folder = tmp_path_factory.mktemp("fp_teacher")
    cfg = build_config(str(STUDENT_CONFIG), ["MODEL.RESNETS.WIDTH_DIVISOR", "4", "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict()}, folder / "model_final.pth")
    (folder / "config.yaml").write_text(cfg.dump())
    quant = folder / "teacher_quant.yaml"
    quant.write_text(
        f'_BASE_: "{STUDENT_CONFIG}"\nMODEL:\n  RESNETS:\n    WIDTH_DIVISOR: 4\n'
        f"  QUANTIZER:\n    ENABLED: True\n    STRIDE_CODES: {CODES}\n    STRIDE_FIT_IMAGES: {FIT_IMAGES}\n"
    )
    return folder, quant


def expected_stride(fp_folder, quant_config, datasets_root) -> float:
    """The rule computed here by hand: the 99th percentile of the positive FPN outputs of the
    full-precision teacher over the first FIT_IMAGES training images, over CODES."""
    cfg = build_config(str(quant_config), [*MINI_OPTS, "MODEL.DEVICE", "cpu"])
    cfg.MODEL.QUANTIZER.ENABLED = False
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(str(fp_folder / "model_final.pth"))
    register_shapes_datasets(datasets_root / "quantmimic_shapes_mini", MINI_SPEC, prefix="stridefit_shapes")
    mapper = DatasetMapper(cfg, is_train=False)
    values = []
    with torch.no_grad():
        for d in DatasetCatalog.get("stridefit_shapes_train")[:FIT_IMAGES]:
            for fmap in model.backbone(model.preprocess_image([mapper(dict(d))]).tensor).values():
                values.append(fmap[fmap > 0].double().numpy())
    return float(np.percentile(np.concatenate(values), 99.0)) / CODES


def test_the_fitted_stride_is_one_number_in_teacher_evaluation_and_student(
    fp_teacher, datasets_root, tmp_path
):
    fp_folder, quant_config = fp_teacher
    out = tmp_path / "teacher_quant"
    run = run_train_net(
        ["--config-file", str(quant_config), *MINI_OPTS, "MODEL.WEIGHTS", str(fp_folder / "model_final.pth"),
         "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out)],
        datasets_root,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    recorded = yaml.safe_load((out / "config.yaml").read_text())["MODEL"]["QUANTIZER"]
    stride = expected_stride(fp_folder, quant_config, datasets_root)
    assert recorded["STRIDE"] == pytest.approx(stride, rel=1e-4) and recorded["STRIDE_CODES"] == CODES
    assert (
        stride != 1.0
        and f"MODEL.QUANTIZER.STRIDE {recorded['STRIDE']:.6g}: fitted" in run.stdout + run.stderr
    )

    # the quantized teacher evaluated (--eval-only): the number beside its weights, nothing refitted
    cfg = build_config(
        str(quant_config), ["MODEL.WEIGHTS", str(out / "model_final.pth"), "MODEL.DEVICE", "cpu"]
    )
    note = resolve_stride(cfg, resume=False, fit=False)
    assert cfg.MODEL.QUANTIZER.STRIDE == recorded["STRIDE"] and "as recorded" in note

    # a student of it: the teacher's quantized ReLU and the mimic loss's quantizer use the same number
    student = build_config(
        str(CONFIGS / "qm_R_tiny_FPN.yaml"),
        ["MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(out / "config.yaml"), "MODEL.DEVICE", "cpu",
         "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(out / "model_final.pth")],
    )  # fmt: skip
    model = build_model(student)
    assert model.teacher.model.backbone.output_quantizer.stride == recorded["STRIDE"]
    assert model.mimic_loss.quantizer.stride == recorded["STRIDE"]

    # weights without the record: one sentence, no guess
    (tmp_path / "bare").mkdir()
    bare = tmp_path / "bare" / "model_final.pth"
    bare.write_bytes((out / "model_final.pth").read_bytes())
    student.MODEL.QUANT_MIMIC.TEACHER_WEIGHTS = str(bare)
    with pytest.raises(QuantMimicInputError, match="holds no record of the fitted stride"):
        build_model(student)
