"""Loading the frozen teacher's weights, with the checks that keep a wrong teacher from being used."""

from __future__ import annotations

import os

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_test_loader
from detectron2.evaluation import COCOEvaluator
from torch import nn

from ..errors import QuantMimicInputError

_MAX_KEYS_SHOWN = 8


def _shown(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_KEYS_SHOWN} more)" if len(keys) > _MAX_KEYS_SHOWN else ""
    return ", ".join(keys[:_MAX_KEYS_SHOWN]) + more


def load_teacher_weights(teacher: nn.Module, path: str, teacher_config: str) -> None:
    """Load a detectron2 checkpoint into ``teacher``; every key and shape must match its config."""
    if not path or not os.path.isfile(path):
        raise QuantMimicInputError(
            f"Teacher weights {path!r} (MODEL.QUANT_MIMIC.TEACHER_WEIGHTS) do not exist: train the teacher "
            "first (its OUTPUT_DIR/model_final.pth) or fix the path."
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise QuantMimicInputError(
            f"Teacher weights {path} hold no state dict: pass a detectron2 checkpoint."
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
        f"wrong shape (checkpoint vs config): {_shown(wrong_shape)}" if wrong_shape else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise QuantMimicInputError(
            f"Teacher weights {path} do not match the teacher config {teacher_config} ("
            + "; ".join(problems)
            + "): pass the checkpoint that was trained with that config."
        )
    teacher.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})


@torch.no_grad()
def quick_teacher_ap(teacher: nn.Module, teacher_cfg: CfgNode, dataset_name: str, num_images: int) -> float:
    """COCO box AP of ``teacher`` on the first ``num_images`` images of ``dataset_name``."""
    dicts = DatasetCatalog.get(dataset_name)[:num_images]
    loader = build_detection_test_loader(dicts, mapper=DatasetMapper(teacher_cfg, is_train=False))
    evaluator = COCOEvaluator(dataset_name, tasks=("bbox",), distributed=False)
    evaluator.reset()
    was_training = teacher.training
    teacher.eval()
    for inputs in loader:
        evaluator.process(inputs, teacher(inputs))
    teacher.train(was_training)
    results = evaluator.evaluate(img_ids=[d["image_id"] for d in dicts]) or {}
    return float(results.get("bbox", {}).get("AP", 0.0))
