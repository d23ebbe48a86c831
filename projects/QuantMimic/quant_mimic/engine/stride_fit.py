"""The quantizer stride fitted to a full-precision teacher (``MODEL.QUANTIZER.STRIDE_CODES`` K > 0).

The paper's stride s = 1 suits ImageNet-trained features; a teacher trained here has features on
another scale (a positive median of about 1, a 99th percentile of about 4 on res4), where s = 1 leaves a
code book of a few codes. The rule: s = (STRIDE_PERCENTILE-th percentile of the positive activations that
Q sits on) / K, measured once on the full-precision weights the quantized model is fine-tuned from, over
the first STRIDE_FIT_IMAGES training images. ``train_net.py`` writes the number into the run's
config.yaml as MODEL.QUANTIZER.STRIDE; the quantized model's evaluation and every student that mimics
it read it there (:func:`quant_mimic.config.recorded_stride`), so fine-tuning, the mimic loss and export
use one number.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model

from ..config import fits_stride, recorded_stride
from ..errors import QuantMimicInputError
from ..modeling.quantizer import quantized_part

logger = logging.getLogger(__name__)

__all__ = ["fit_stride", "positive_percentile", "resolve_stride"]


@torch.no_grad()
def positive_percentile(
    model: torch.nn.Module,
    inputs: list[dict],
    percentile: float,
    batch: int = 8,
    part: torch.nn.Module | None = None,
) -> float:
    """The ``percentile`` (0-100) of the positive values of every output map of ``part`` (default
    ``model.backbone``: the maps the quantized ReLU sits on, see ``quantized_part``), over ``inputs``
    (detectron2 dicts, batched and normalized as ``model`` does)."""
    part = model.backbone if part is None else part
    positives = []
    for start in range(0, len(inputs), batch):
        images = model.preprocess_image(inputs[start : start + batch])
        for fmap in part(images.tensor).values():
            positives.append(fmap[fmap > 0].flatten().double().cpu().numpy())
    values = np.concatenate(positives) if positives else np.empty(0)
    if values.size == 0:
        raise QuantMimicInputError(
            "The full-precision model's features have no positive activation on the fitting images: "
            "its weights are untrained or broken; train the full-precision model first."
        )
    return float(np.percentile(values, percentile))


def fit_stride(cfg: CfgNode) -> float:
    """s = percentile / STRIDE_CODES for the full-precision weights ``cfg.MODEL.WEIGHTS`` (the model
    built from ``cfg`` without its quantizer; the maps of MODEL.QUANTIZER.PLACEMENT), over the first
    STRIDE_FIT_IMAGES of DATASETS.TRAIN[0]."""
    q = cfg.MODEL.QUANTIZER
    weights = cfg.MODEL.WEIGHTS
    if not weights or not os.path.isfile(weights):
        raise QuantMimicInputError(
            f"MODEL.QUANTIZER.STRIDE_CODES {q.STRIDE_CODES} fits the stride to the full-precision weights "
            f"in MODEL.WEIGHTS, but {weights!r} is not a file: train the full-precision model first."
        )
    fp_cfg = cfg.clone()
    fp_cfg.defrost()
    fp_cfg.MODEL.QUANTIZER.ENABLED = False
    model = build_model(fp_cfg).eval()
    DetectionCheckpointer(model).load(weights)
    mapper = DatasetMapper(fp_cfg, is_train=False)
    inputs = [mapper(dict(d)) for d in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[: q.STRIDE_FIT_IMAGES]]
    part = quantized_part(fp_cfg, model.backbone)
    return positive_percentile(model, inputs, q.STRIDE_PERCENTILE, part=part) / q.STRIDE_CODES


def resolve_stride(cfg: CfgNode, *, resume: bool, fit: bool) -> str | None:
    """Set ``cfg.MODEL.QUANTIZER.STRIDE`` (not frozen) where the config fits it, and say where it came
    from: the record of the run being resumed (``resume``), else the record beside MODEL.WEIGHTS (the
    quantized model itself, e.g. ``--eval-only``), else, with ``fit``, :func:`fit_stride` on
    MODEL.WEIGHTS (fine-tuning from full precision). None where the config has no rule."""
    if not fits_stride(cfg):
        return None
    q = cfg.MODEL.QUANTIZER
    records = [os.path.join(cfg.OUTPUT_DIR, "config.yaml")] if resume and cfg.OUTPUT_DIR else []
    records += [cfg.MODEL.WEIGHTS] if cfg.MODEL.WEIGHTS else []
    for path in records:
        try:
            q.STRIDE = recorded_stride(cfg, path)
        except QuantMimicInputError:
            continue
        return f"MODEL.QUANTIZER.STRIDE {q.STRIDE:.6g}: fitted earlier, as recorded beside {path}"
    if not fit:
        raise QuantMimicInputError(
            f"The config fits its quantizer stride (MODEL.QUANTIZER.STRIDE_CODES {q.STRIDE_CODES}) and "
            f"{cfg.MODEL.WEIGHTS!r} has no config.yaml beside it that records the fitted stride: pass the "
            "weights of the quantized model trained with this config."
        )
    q.STRIDE = round(fit_stride(cfg), 6)
    return (
        f"MODEL.QUANTIZER.STRIDE {q.STRIDE:.6g}: fitted to {cfg.MODEL.WEIGHTS} (the {q.STRIDE_PERCENTILE:g}th "
        f"percentile of positive activations spans {q.STRIDE_CODES} codes)"
    )
