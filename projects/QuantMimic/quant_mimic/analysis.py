"""Inference cost of one detector: parameters, GFLOPs and CPU/GPU latency split by stage.

:func:`model_cost` builds the model of a config (a ``QuantMimicRCNN`` config: its student, the model that
is deployed) and measures one image of a given size, fed to the network at that size (the config's
test-time resize is not applied, so any size can be compared):

- parameters: all of them, and those of the backbone (+FPN);
- GFLOPs: fvcore's ``FlopCountAnalysis`` over inference without ``detector_postprocess``, traced through a
  wrapper that returns tensors. fvcore counts one fused multiply-add as one flop, so these are GMACs;
  ROIAlign and NMS count nothing. (``detectron2.utils.analysis`` imports caffe2 and fails on torch 2.)
- latency: ``GeneralizedRCNN.inference`` run stage by stage in one pass, each stage timed (with a CUDA
  synchronize on GPUs), so the parts add up to the total. Medians over ``repeats`` passes after
  ``warmup`` untimed ones (oneDNN / cuDNN warm-up). The parts:

  ``preprocess``  normalise + pad (``preprocess_image``)
  ``backbone``    backbone + FPN
  ``rpn``         ``proposal_generator``: anchors, objectness, top-k, NMS over proposals
  ``roi_heads``   ``box_pooler`` (ROIAlign) + ``box_head`` + ``box_predictor`` (and mask / keypoint heads)
  ``postprocess`` ``box_predictor.inference`` (box decoding, score threshold, per-class NMS) +
                  ``detector_postprocess`` (rescale to the input size)

  ROI heads other than a plain ``StandardROIHeads`` box branch (e.g. an R-FCN or cascade head) are timed
  as one ``roi_heads`` part that includes their own post-processing; ``roi_heads_includes_postprocess``
  says which way was used. Post-processing time grows with the number of boxes that pass the score
  threshold, so random and trained weights differ there; ``detections`` reports that count.
"""

from __future__ import annotations

import statistics
import warnings
from typing import TYPE_CHECKING, Any

import torch
from detectron2.config import CfgNode
from detectron2.modeling import GeneralizedRCNN, StandardROIHeads, build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances
from torch import nn

from .config import deployed_config
from .errors import QuantMimicInputError
from .timing import Lap, random_image, time_calls

if TYPE_CHECKING:
    from .deploy import DeployedPredictor


def has_standard_box_branch(roi_heads: nn.Module) -> bool:
    """Whether ``roi_heads`` runs StandardROIHeads' own box branch, so it can be timed stage by stage."""
    cls = type(roi_heads)
    return (
        isinstance(roi_heads, StandardROIHeads)
        and cls.forward is StandardROIHeads.forward
        and cls._forward_box is StandardROIHeads._forward_box
    )


def staged_inference(
    model: GeneralizedRCNN, batched_inputs: list[dict], lap: Lap = lambda part: None
) -> tuple[list[dict[str, Instances]], dict[str, int]]:
    """``model.inference(batched_inputs)`` with ``lap(part)`` called at the end of each part of
    :data:`quant_mimic.timing.PARTS` (for :func:`quant_mimic.timing.time_calls`).

    Returns:
        results: as ``model.inference`` (one ``{"instances": Instances}`` per image).
        counts: ``proposals`` and ``detections`` of the first image.
    """
    images = model.preprocess_image(batched_inputs)
    lap("preprocess")
    features = model.backbone(images.tensor)
    lap("backbone")
    if model.proposal_generator is None:
        raise QuantMimicInputError("The model has no proposal generator: only RPN-based detectors are timed.")
    proposals, _ = model.proposal_generator(images, features, None)
    lap("rpn")
    heads = model.roi_heads
    if has_standard_box_branch(heads):
        box_features = heads.box_pooler(
            [features[f] for f in heads.box_in_features], [p.proposal_boxes for p in proposals]
        )
        predictions = heads.box_predictor(heads.box_head(box_features))
        lap("roi_heads")
        instances, _ = heads.box_predictor.inference(predictions, proposals)
        lap("postprocess")
        instances = heads.forward_with_given_boxes(features, instances)  # masks / keypoints, if any
        lap("roi_heads")
    else:
        instances, _ = heads(images, features, proposals, None)
        lap("roi_heads")
    results = [
        {"instances": detector_postprocess(r, x.get("height", size[0]), x.get("width", size[1]))}
        for r, x, size in zip(instances, batched_inputs, images.image_sizes)
    ]
    lap("postprocess")
    counts = {"proposals": len(proposals[0]), "detections": len(results[0]["instances"])}
    return results, counts


class _InferenceTensors(nn.Module):
    """Inference without ``detector_postprocess``, returning tensors (what fvcore's tracer needs)."""

    def __init__(self, model: GeneralizedRCNN):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        instances = self.model.inference([{"image": image}], do_postprocess=False)[0]
        return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def count_gflops(model: GeneralizedRCNN, image: torch.Tensor) -> dict[str, float]:
    """fvcore GFLOPs (1 multiply-add = 1 flop) of one inference on ``image`` (Tensor[3, H, W], 0-255):
    ``total`` and ``backbone`` (+FPN)."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(_InferenceTensors(model), (image,))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shapes and NMS
        total = analysis.total()
        backbone = analysis.by_module().get("model.backbone", 0)
    return {"total": total / 1e9, "backbone": backbone / 1e9}


def model_cost(
    cfg: CfgNode,
    height: int,
    width: int,
    repeats: int = 20,
    warmup: int = 5,
    *,
    model: nn.Module | None = None,
    flops: bool = True,
) -> dict[str, Any]:
    """Parameters, GFLOPs and median latency of one ``height`` x ``width`` image through the model of ``cfg``.

    Args:
        cfg: a detectron2 / QuantMimic config (a QuantMimicRCNN config is measured as its student).
        height, width: the network's input size in pixels (no test-time resize is applied).
        repeats: timed passes; the medians are over these.
        warmup: untimed passes first.
        model: the model to measure (default: ``build_model`` of the config, random weights).
        flops: count GFLOPs (tracing the model takes about as long as a few passes).

    Returns:
        ``params``, ``backbone_params`` (int); ``gflops``, ``backbone_gflops`` (float, None without
        ``flops``); ``latency_ms``: median ms of ``total`` and of each part in :data:`.timing.PARTS`;
        ``roi_heads_includes_postprocess`` (bool); ``proposals``, ``detections`` (median counts, first
        image); ``input_size`` [height, width]; ``repeats``, ``warmup``, ``device``, ``threads``.
    """
    cfg = deployed_config(cfg)
    if model is None:
        model = build_model(cfg)
    if not isinstance(model, GeneralizedRCNN):
        raise QuantMimicInputError(
            f"META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} is not a GeneralizedRCNN: only two-stage "
            "detectors are measured."
        )
    model.eval()
    device = model.device
    image = random_image(height, width, len(cfg.MODEL.PIXEL_MEAN), device)  # 1 channel for grayscale
    inputs = [{"image": image, "height": height, "width": width}]
    with torch.no_grad():
        gflops = count_gflops(model, image) if flops else {"total": None, "backbone": None}
        timing = time_calls(lambda lap: staged_inference(model, inputs, lap)[1], repeats, warmup, device)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "backbone_params": sum(p.numel() for p in model.backbone.parameters()),
        "gflops": gflops["total"],
        "backbone_gflops": gflops["backbone"],
        "latency_ms": timing.median_ms(),
        "roi_heads_includes_postprocess": not has_standard_box_branch(model.roi_heads),
        "proposals": int(statistics.median(n["proposals"] for n in timing.results)),
        "detections": int(statistics.median(n["detections"] for n in timing.results)),
        "input_size": [height, width],
        "repeats": repeats,
        "warmup": warmup,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def deployed_latency(
    predictor: DeployedPredictor,
    height: int,
    width: int,
    batch: int = 1,
    repeats: int = 20,
    warmup: int = 5,
) -> dict[str, Any]:
    """Median latency of the deployed model on ``batch`` random ``height`` x ``width`` images fed at that
    size, total and per part: ``preprocess`` (normalise + pad), ``backbone`` (backbone + FPN), ``rpn``
    (head convs, top-k, decoding, NMS), ``roi_heads`` (ROIAlign + box head), ``postprocess`` (decoding,
    NMS, and the conversion to ``Instances`` in input coordinates, with the one wait for the device).

    Returns:
        ``latency_ms`` (median ms of ``total`` and each part), ``detections`` (median count, first image),
        ``input_size``, ``batch``, ``repeats``, ``warmup``, ``device``, ``threads``.
    """
    channels = len(predictor.spec["input"]["pixel_mean"])
    inputs = [
        {
            "image": random_image(height, width, channels, seed=i).to(torch.uint8),
            "height": height,
            "width": width,
        }
        for i in range(batch)
    ]

    def run(lap: Lap) -> int:
        results = predictor.model(inputs, lap=lap)
        lap("postprocess")  # the conversion to Instances, with the one wait for the device
        return len(results[0]["instances"])

    timing = time_calls(run, repeats, warmup, predictor.device)
    return {
        "latency_ms": timing.median_ms(),
        "detections": int(statistics.median(timing.results)),
        "input_size": [height, width],
        "batch": batch,
        "repeats": repeats,
        "warmup": warmup,
        "device": str(predictor.device),
        "threads": torch.get_num_threads(),
    }
