"""Loading the frozen teacher's weights, with the checks that keep a wrong teacher from being used."""

from __future__ import annotations

import math
import os

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_test_loader
from detectron2.evaluation import COCOEvaluator
from torch import nn

from ..checkpoint import is_quant_mimic_state
from ..errors import QuantMimicInputError
from .mapper import ImageErrorNamingMapper
from .run_dir import error_summary

_MAX_KEYS_SHOWN = 8


def _shown(keys: list[str], limit: int = _MAX_KEYS_SHOWN) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _looks_like_text(path: str) -> bool:
    """Whether the file starts like text (a yaml or a log passed by mistake); checkpoints are binary."""
    with open(path, "rb") as f:
        head = f.read(512)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text) and all(c.isprintable() or c in "\t\r\n" for c in text)


def load_teacher_weights(teacher: nn.Module, path: str, teacher_config: str) -> None:
    """Load a detectron2 checkpoint into ``teacher``; every key and shape must match its config."""
    if not path or not os.path.isfile(path):
        raise QuantMimicInputError(
            f"Teacher weights {path!r} (MODEL.QUANT_MIMIC.TEACHER_WEIGHTS) do not exist: train the teacher "
            "first (its OUTPUT_DIR/model_final.pth) or fix the path."
        )
    if _looks_like_text(path):
        raise QuantMimicInputError(
            f"Teacher weights {path} (MODEL.QUANT_MIMIC.TEACHER_WEIGHTS) is a text file, not a PyTorch "
            "checkpoint: pass the teacher's OUTPUT_DIR/model_final.pth."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001  (text, truncated or foreign files raise many kinds)
        raise QuantMimicInputError(
            f"Teacher weights {path} (MODEL.QUANT_MIMIC.TEACHER_WEIGHTS) cannot be read as a PyTorch "
            f"checkpoint ({error_summary(e)}): pass the teacher's OUTPUT_DIR/model_final.pth."
        ) from None
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise QuantMimicInputError(
            f"Teacher weights {path} (MODEL.QUANT_MIMIC.TEACHER_WEIGHTS) hold no model state dict: pass "
            "the teacher's detectron2 checkpoint (its OUTPUT_DIR/model_final.pth)."
        )
    if is_quant_mimic_state(state):
        raise QuantMimicInputError(
            f"Teacher weights {path} are a Quantization Mimic checkpoint (student + teacher), not a teacher's: "
            "pass the teacher's own OUTPUT_DIR/model_final.pth as MODEL.QUANT_MIMIC.TEACHER_WEIGHTS."
        )
    expected = teacher.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    )
    problems = [
        f"missing: {_shown(missing)}" if missing else "",
        f"unexpected: {_shown(unexpected)}" if unexpected else "",
        f"wrong shape (checkpoint vs config): {_shown(wrong_shape, 3)}" if wrong_shape else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise QuantMimicInputError(
            f"Teacher weights {path} do not match the teacher config {teacher_config} ("
            + "; ".join(problems)
            + "): pass the checkpoint that was trained with that config (not the student's own)."
        )
    teacher.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})


@torch.no_grad()
def quick_teacher_ap(
    teacher: nn.Module,
    teacher_cfg: CfgNode,
    dataset_name: str,
    num_images: int,
    output_dir: str | None = None,
) -> float:
    """COCO box AP of ``teacher`` on the first ``num_images`` images of ``dataset_name`` (0 for a teacher
    that detects nothing there, where detectron2's COCOEvaluator gives NaN)."""
    dicts = DatasetCatalog.get(dataset_name)[:num_images]
    mapper = ImageErrorNamingMapper(DatasetMapper(teacher_cfg, is_train=False))
    loader = build_detection_test_loader(dicts, mapper=mapper)
    # output_dir: where detectron2 writes its COCO conversion of a non-COCO data set (VOC, WIDER FACE)
    evaluator = COCOEvaluator(dataset_name, tasks=("bbox",), distributed=False, output_dir=output_dir)
    evaluator.reset()
    was_training = teacher.training
    teacher.eval()
    for inputs in loader:
        evaluator.process(inputs, teacher(inputs))
    teacher.train(was_training)
    results = evaluator.evaluate(img_ids=[d["image_id"] for d in dicts]) or {}
    ap = float(results.get("bbox", {}).get("AP", 0.0))
    return ap if math.isfinite(ap) else 0.0
