"""The deployed detector: a folder written by :func:`quant_mimic.deploy.export_deployed`, loaded and run.

The folder holds ``deploy.json`` (test-time settings, anchors, input format, class names) and three
traced TorchScript networks (frozen when loaded; also as ONNX), batch norm folded into their convs:
``backbone.ts`` (backbone + FPN, 1/PIXEL_STD folded into its first conv), ``rpn_head.ts`` (the RPN head's
convs) and ``head.ts`` (Faster R-CNN: box head + predictor; R-FCN: the position-sensitive score-map convs).
Everything between the networks runs here, batched over the images of a call, with fixed-size top-k and
one NMS call per stage for all images (on the CPU, all of it in one ONNX Runtime graph per input shape,
:class:`OnnxDetectorGraphs`):

    images - PIXEL_MEAN, padded -> backbone.ts -> rpn_head.ts
           -> per level: top-k anchors by objectness, decode, clip, drop small boxes
           -> one NMS over (image, level) groups -> top POST_NMS_TOPK proposals per image
           -> ROIAlign (FPN level per box) -> head.ts | PS-ROIAlign + voting (R-FCN)
           -> softmax, decode, clip, score threshold -> top CANDIDATES per image
           -> one NMS over (image, class) groups -> top DETECTIONS_PER_IMAGE per image

Only torch, torchvision, numpy and Pillow are needed to load and run it (``detectron2.structures`` only
to hand back ``Instances``): no model registry, no config, no training code. The results equal
detectron2's ``GeneralizedRCNN.inference`` with the same settings, up to float rounding and the fixed
number of candidates per image (see ``MODEL.DEPLOY``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torchvision.ops import batched_nms, ps_roi_align, roi_align

DEPLOY_FILE = "deploy.json"
NETWORK_FILES = {"backbone": "backbone.ts", "rpn_head": "rpn_head.ts", "head": "head.ts"}
ONNX_FILES = {"backbone": "backbone.onnx", "rpn_head": "rpn_head.onnx", "head": "head.onnx"}
GRAPH_BACKEND = "onnxruntime_graph"  # the whole detector as one ONNX Runtime graph per input shape (CPU)
ONNX_BACKENDS = ("onnxruntime", GRAPH_BACKEND)  # the backends that run the folder's ONNX networks
BACKENDS = ("auto", "torchscript", *ONNX_BACKENDS)
# input shapes that get a whole-detector ONNX graph; further shapes run network by network
MAX_ONNX_GRAPHS = 8
PARTS = ("backbone", "rpn", "roi_heads", "postprocess")
FORMAT_VERSION = 2  # 2: the backbone network takes mean-subtracted images (1: raw 0-255)
# rounds of the static NMS under a CUDA graph (see matrix_nms; more rounds fall back to exact NMS)
STATIC_NMS_ROUNDS = 12
# the largest RPN pre-NMS top-k per level the static NMS takes (a K x K matrix per image and level)
MAX_STATIC_NMS_TOPK = 2000


def grid_anchors(
    cell_anchors: torch.Tensor, stride: int, offset: float, height: int, width: int
) -> torch.Tensor:
    """The anchors of one feature map, Tensor[height * width * A, 4] (XYXY, input pixels), in the RPN
    head's output order (location-major, then the A cell anchors)."""
    kwargs = {"dtype": torch.float32, "device": cell_anchors.device}
    shifts_x = torch.arange(offset * stride, width * stride, step=stride, **kwargs)
    shifts_y = torch.arange(offset * stride, height * stride, step=stride, **kwargs)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + cell_anchors.view(1, -1, 4)).reshape(-1, 4)


def decode_boxes(
    deltas: torch.Tensor, boxes: torch.Tensor, weights: Sequence[float], scale_clamp: float
) -> torch.Tensor:
    """Apply (dx, dy, dw, dh) ``deltas`` Tensor[..., 4] to XYXY ``boxes`` Tensor[..., 4] (broadcast):
    detectron2's ``Box2BoxTransform.apply_deltas`` on any batch shape, with the same float operations.
    x and y are computed together (pairs of coordinates): a whole-detector graph has a few operators
    here, not one per coordinate (each costs microseconds in ONNX Runtime, whatever its size)."""
    deltas = deltas.float()
    boxes = boxes.to(deltas.dtype)
    size = boxes[..., 2:] - boxes[..., :2]
    center = boxes[..., :2] + 0.5 * size
    shift, scale = deltas[..., :2], deltas[..., 2:]
    wx, wy, ww, wh = weights
    shift = shift / wx if wx == wy else torch.cat((shift[..., :1] / wx, shift[..., 1:] / wy), dim=-1)
    scale = scale / ww if ww == wh else torch.cat((scale[..., :1] / ww, scale[..., 1:] / wh), dim=-1)
    pred_center = shift * size + center
    pred_size = torch.exp(torch.clamp(scale, max=scale_clamp)) * size
    return torch.cat((pred_center - 0.5 * pred_size, pred_center + 0.5 * pred_size), dim=-1)


def clip_boxes(boxes: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
    """Clip XYXY ``boxes`` Tensor[B, ..., 4] to each image's (height, width) in ``image_sizes``
    Tensor[B, 2]."""
    limits = image_sizes.flip(1).repeat(1, 2).to(boxes.dtype)  # (w, h, w, h)
    limits = limits.view((-1,) + (1,) * (boxes.dim() - 2) + (4,))
    return boxes.clamp(min=0).minimum(limits).maximum(boxes.new_zeros(()))


def finite(x: torch.Tensor) -> torch.Tensor:
    """``torch.isfinite(x)`` in 2 graph operators instead of 5 (ONNX has no IsFinite)."""
    return x.abs() < math.inf


def grouped_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS within each group, for all groups at once; entries whose score is -inf are never kept.
    Returns the kept indices, by decreasing score.

    CPU: those entries are dropped first (a boolean index waits on nothing there, and NMS time grows
    with the square of its input), then ``torchvision.ops.batched_nms``. Other devices: the input keeps
    its fixed size and goes to ``batched_nms`` as it is: up to 20,000 boxes it moves the groups apart by
    an offset for one ``nms`` call; above, it loops over the groups, because one call's cost grows with
    the square of the box count (the teacher's RPN at batch 32: 80,000 boxes). -inf entries may be
    returned there; the callers mask them.
    """
    if boxes.device.type == "cpu":
        idx = torch.nonzero(finite(scores)).squeeze(1)
        return idx[batched_nms(boxes[idx], scores[idx], groups[idx], iou_threshold)]
    return batched_nms(boxes, scores, groups, iou_threshold)


def keep_mask(keep: torch.Tensor, size: int) -> torch.Tensor:
    """Bool Tensor[size], True at the indices ``keep``."""
    mask = torch.zeros(size, dtype=torch.bool, device=keep.device)
    return mask.scatter(0, keep, torch.ones_like(keep, dtype=torch.bool))  # traceable, unlike index_fill_


def pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of XYXY ``boxes`` Tensor[G, K, 4] within each group: Tensor[G, K, K]
    (torchvision's ``box_iou`` formula, batched)."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area[:, :, None] + area[:, None, :] - inter)


def matrix_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float,
    iterations: int,
    classes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS with static shapes, for all groups at once, without waiting on the device.

    ``boxes`` Tensor[G, K, 4] and ``scores`` Tensor[G, K], sorted by decreasing score within each group
    (as ``topk`` gives them); entries whose score is -inf are never kept and suppress nothing;
    ``classes`` Tensor[G, K], if given, splits each group further (boxes of different classes never
    suppress each other). Returns ``keep`` Bool Tensor[G, K] and ``converged`` Bool Tensor[].

    Greedy NMS keeps box i iff no kept box before it overlaps it by more than ``iou_threshold``:
    ``keep = valid & ~any_j(keep_j & S_ji)`` with S the "j before i and overlapping" matrix. Its one
    solution is reached by iterating from ``keep = valid``: after t rounds the first t boxes are final,
    and a round that changes nothing means the solution is reached (then ``converged`` is True and the
    result equals ``torchvision.ops.nms``, up to ties in score). ``iterations`` rounds run, a fixed
    count (in practice suppression chains are a few boxes long); the caller falls back to exact NMS
    when ``converged`` is False.
    """
    num = boxes.shape[1]
    suppress = pairwise_iou(boxes.float()) > iou_threshold
    suppress = suppress & torch.ones(num, num, dtype=torch.bool, device=boxes.device).triu(1)
    if classes is not None:
        suppress = suppress & (classes[:, :, None] == classes[:, None, :])
    suppress_f = suppress.to(torch.float32)
    valid = finite(scores)
    keep = valid
    previous = keep
    for _ in range(iterations):
        previous = keep
        suppressed = torch.bmm(keep.to(torch.float32).unsqueeze(1), suppress_f).squeeze(1) > 0
        keep = valid & ~suppressed
    return keep, (keep == previous).all()


class DeployedDetector(nn.Module):
    """Batched inference of a deployed two-stage detector (Faster R-CNN / R-FCN).

    ``forward(images Tensor[B, C, H, W] minus the pixel mean and padded with 0 (``DeployedPredictor.batch``),
    image_sizes Tensor[B, 2] (h, w) before padding)`` returns fixed-size tensors: boxes Tensor[B, D, 4] (XYXY, network input pixels), scores
    Tensor[B, D], classes Tensor[B, D] (int64) and valid Tensor[B, D] (bool: a detection, not padding),
    D = ``DETECTIONS_PER_IMAGE``, best first. Nothing in it waits on the device.
    """

    def __init__(self, networks: dict[str, Any], spec: dict[str, Any]):
        """``networks``: "backbone", "rpn_head" and "head", each a callable from tensors to a tuple of
        tensors (TorchScript modules, or :class:`OnnxNetwork`)."""
        super().__init__()
        self.networks = nn.ModuleDict({k: v for k, v in networks.items() if isinstance(v, nn.Module)})
        self.spec = spec
        rpn = spec["rpn"]
        self.num_levels = len(rpn["strides"])
        self.register_buffer(
            "cell_anchors_flat",
            torch.tensor(sum(rpn["cell_anchors"], []), dtype=torch.float32),
            persistent=False,
        )
        self.cell_anchor_counts = [len(a) for a in rpn["cell_anchors"]]
        self._anchor_cache: dict[tuple, torch.Tensor] = {}
        self.run: dict[str, Any] = dict(networks)
        # rounds of the static-shape NMS (:func:`matrix_nms`); 0: torchvision's exact NMS
        self.nms_iterations = 0
        self.graph: CudaGraphRunner | None = None

    def use_cuda_graphs(self, nms_iterations: int = STATIC_NMS_ROUNDS) -> None:
        """Replay the whole detector, networks and everything between them, from CUDA graphs (one
        captured per input shape): the NMS becomes the static-shape :func:`matrix_nms` (CUDA only)."""
        if nms_iterations < 1:
            raise ValueError("A CUDA graph needs the static NMS: nms_iterations must be at least 1.")
        if self.spec["roi"]["kind"] != "fast_rcnn":
            raise ValueError(
                "CUDA graphs are not available for R-FCN deployed models (their capture failed with "
                "cudaErrorStreamCaptureInvalidated on torch 2.11): run this one without cuda_graphs."
            )
        if self.spec["rpn"]["pre_nms_topk"] > MAX_STATIC_NMS_TOPK:
            raise ValueError(
                f"RPN pre-NMS top-k {self.spec['rpn']['pre_nms_topk']} is too large for the static NMS of a "
                f"CUDA graph (memory grows with its square): deploy with MODEL.RPN.PRE_NMS_TOPK_TEST <= "
                f"{MAX_STATIC_NMS_TOPK}, or run without cuda_graphs."
            )
        self.nms_iterations = nms_iterations
        self.graph = CudaGraphRunner(self.detect)

    def anchors(self, level: int, height: int, width: int) -> torch.Tensor:
        """Anchors of ``level`` for a ``height`` x ``width`` feature map, cached per size."""
        key = (level, height, width, self.cell_anchors_flat.device)
        if key not in self._anchor_cache:
            start = sum(self.cell_anchor_counts[:level])
            cells = self.cell_anchors_flat[start : start + self.cell_anchor_counts[level]]
            rpn = self.spec["rpn"]
            self._anchor_cache[key] = grid_anchors(cells, rpn["strides"][level], rpn["offset"], height, width)
        return self._anchor_cache[key]

    def proposals(
        self, logits: list[torch.Tensor], deltas: list[torch.Tensor], image_sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RPN outputs (per level: logits Tensor[B, A, h, w], deltas Tensor[B, A*4, h, w]) to proposals
        Tensor[B, P, 4], their validity Tensor[B, P] (P = POST_NMS_TOPK, or fewer anchors) and whether
        the NMS converged (Bool Tensor[], see :func:`matrix_nms`)."""
        rpn = self.spec["rpn"]
        batch = image_sizes.shape[0]
        tops = []
        for level, (lg, dl) in enumerate(zip(logits, deltas)):
            _, num_anchors, height, width = lg.shape
            # top-k straight on the head's (anchor, y, x) layout: no transpose of the whole maps, only
            # the k chosen entries are re-indexed (to the anchors' (y, x, anchor) order, detectron2's)
            cells = height * width
            lg = lg.reshape(batch, -1).float()
            top_scores, top_idx = lg.topk(min(rpn["pre_nms_topk"], lg.shape[1]), dim=1)
            anchor, cell = top_idx // cells, top_idx % cells
            coords = torch.arange(4, device=top_idx.device)
            delta_idx = (anchor.unsqueeze(-1) * 4 + coords) * cells + cell.unsqueeze(-1)  # [B, k, 4]
            top_deltas = dl.reshape(batch, -1).gather(1, delta_idx.flatten(1)).view(batch, -1, 4)
            anchors = self.anchors(level, height, width)[cell * num_anchors + anchor]
            tops.append((top_deltas, anchors, top_scores))
        # every level padded to the same k (score -inf: never kept), then decoded at once: Tensor[B, L, k]
        k = max(sc.shape[1] for *_, sc in tops)

        def pad(x: torch.Tensor, dim: int, value: float = 0.0) -> torch.Tensor:  # to k along dim; a level
            missing = k - x.shape[dim]  # with k anchors or more (most) gets no pad operator in a graph
            return F.pad(x, (0, 0) * (-1 - dim) + (0, missing), value=value) if missing else x

        deltas = torch.stack([pad(d, -2) for d, _, _ in tops], dim=1)
        anchors = torch.stack([pad(a, -2) for _, a, _ in tops], dim=-3)
        scores = torch.stack([pad(sc, -1, -math.inf) for *_, sc in tops], dim=1)
        boxes = decode_boxes(deltas, anchors, rpn["box_weights"], rpn["scale_clamp"])
        valid = finite(boxes).all(-1) & finite(scores)
        boxes = clip_boxes(torch.where(valid.unsqueeze(-1), boxes, boxes.new_zeros(())), image_sizes)
        size = rpn["min_box_size"]
        valid = valid & ((boxes[..., 2:] - boxes[..., :2]) > size).all(-1)
        scores = scores.masked_fill(~valid, -math.inf)
        levels = self.num_levels
        if self.nms_iterations:
            kept, converged = matrix_nms(
                boxes.view(-1, k, 4), scores.view(-1, k), rpn["nms_thresh"], self.nms_iterations
            )
            kept = kept.view(batch, levels * k)
        else:
            groups = torch.arange(batch * levels, device=scores.device).repeat_interleave(k)
            keep = grouped_nms(boxes.reshape(-1, 4), scores.reshape(-1), groups, rpn["nms_thresh"])
            kept = keep_mask(keep, scores.numel()).view(batch, levels * k)
            converged = torch.ones((), dtype=torch.bool, device=scores.device)
        boxes, scores = boxes.view(batch, -1, 4), scores.view(batch, -1)
        scores = scores.masked_fill(~(kept & valid.view(batch, -1)), -math.inf)
        top_scores, top_idx = scores.topk(min(rpn["post_nms_topk"], levels * k), dim=1)
        proposals = boxes.gather(1, top_idx.unsqueeze(-1).expand(-1, -1, 4))
        return proposals, finite(top_scores), converged

    def pool(self, features: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """ROIAlign of ``rois`` Tensor[N, 5] (batch index, XYXY) from the FPN level each box belongs to
        (detectron2's ``ROIPooler``: level = floor(4 + log2(sqrt(area) / 224)), clamped)."""
        pooler = self.spec["roi"]["pooler"]
        resolution, ratio, aligned = pooler["resolution"], pooler["sampling_ratio"], pooler["aligned"]
        if len(features) == 1:
            return roi_align(features[0], rois, resolution, pooler["scales"][0], ratio, aligned)
        min_level = -math.log2(pooler["scales"][0])
        max_level = -math.log2(pooler["scales"][-1])
        boxes = rois[:, 1:]
        sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        level = torch.floor(
            pooler["canonical_level"] + torch.log2(sizes / pooler["canonical_box_size"] + 1e-8)
        )
        level = (level.clamp(min=min_level, max=max_level) - min_level).to(torch.int64)
        if rois.device.type != "cpu":  # every level pools every box, and each box keeps its own level's
            pooled = [
                roi_align(x, rois, resolution, s, ratio, aligned) for x, s in zip(features, pooler["scales"])
            ]
            return torch.stack(pooled).gather(0, level.view(1, -1, 1, 1, 1).expand(1, *pooled[0].shape))[0]
        output = features[0].new_zeros((rois.shape[0], features[0].shape[1], resolution, resolution))
        for i, (x, scale) in enumerate(zip(features, pooler["scales"])):
            idx = torch.nonzero(level == i).squeeze(1)  # on the CPU, a boolean index waits on nothing
            output.index_put_((idx,), roi_align(x, rois[idx], resolution, scale, ratio, aligned))
        return output

    def box_predictions(
        self, features: dict[str, torch.Tensor], proposals: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits Tensor[B*P, K+1] and box deltas Tensor[B*P, 4 or 4K] of the proposals."""
        batch, num = proposals.shape[:2]
        image_ids = torch.arange(batch, device=proposals.device, dtype=proposals.dtype)
        rois = torch.cat([image_ids.repeat_interleave(num).unsqueeze(1), proposals.reshape(-1, 4)], dim=1)
        roi = self.spec["roi"]
        maps = [features[f] for f in roi["in_features"]]
        rois = rois.to(maps[0].dtype)
        if roi["kind"] == "fast_rcnn":
            logits, deltas = self.run["head"](self.pool(maps, rois))
        else:
            cls_maps, box_maps = self.run["head"](maps[0])
            rfcn = roi["rfcn"]
            args = (rfcn["pool_size"], rfcn["spatial_scale"], rfcn["sampling_ratio"])
            logits = ps_roi_align(cls_maps, rois, *args).mean(dim=(2, 3))
            deltas = ps_roi_align(box_maps, rois, *args).mean(dim=(2, 3))
        return logits.float(), deltas.float()

    def detections(
        self,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        proposals: torch.Tensor,
        proposal_valid: torch.Tensor,
        image_sizes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detectron2's ``fast_rcnn_inference`` for all images at once, with fixed sizes."""
        roi = self.spec["roi"]
        batch, num = proposals.shape[:2]
        num_classes = roi["num_classes"]
        scores = torch.softmax(logits, dim=-1)[:, :num_classes].reshape(batch, num, num_classes)
        boxes = decode_boxes(
            deltas.view(batch, num, -1, 4), proposals.unsqueeze(2), roi["box_weights"], roi["scale_clamp"]
        )
        ok = finite(boxes).flatten(2).all(-1) & finite(scores).all(-1)
        boxes = clip_boxes(boxes, image_sizes).expand(-1, -1, num_classes, -1)
        keep = (scores > roi["score_thresh"]) & (ok & proposal_valid).unsqueeze(-1)
        scores = scores.masked_fill(~keep, -math.inf).reshape(batch, -1)
        top_scores, top_idx = scores.topk(min(roi["candidates_per_image"], scores.shape[1]), dim=1)
        top_boxes = boxes.reshape(batch, -1, 4).gather(1, top_idx.unsqueeze(-1).expand(-1, -1, 4))
        classes = top_idx % num_classes
        per_image = top_scores.shape[1]
        if self.nms_iterations:
            kept, converged = matrix_nms(
                top_boxes, top_scores, roi["nms_thresh"], self.nms_iterations, classes=classes
            )
        else:
            image_ids = torch.arange(batch, device=scores.device).repeat_interleave(per_image)
            groups = image_ids * num_classes + classes.reshape(-1)
            keep = grouped_nms(top_boxes.reshape(-1, 4), top_scores.reshape(-1), groups, roi["nms_thresh"])
            kept = keep_mask(keep, top_scores.numel()).view(batch, per_image) & finite(top_scores)
            converged = torch.ones((), dtype=torch.bool, device=scores.device)
        top_scores = top_scores.masked_fill(~kept, -math.inf)
        final_scores, final_idx = top_scores.topk(min(roi["detections_per_image"], per_image), dim=1)
        final_boxes = top_boxes.gather(1, final_idx.unsqueeze(-1).expand(-1, -1, 4))
        valid = finite(final_scores)
        return final_boxes, final_scores, classes.gather(1, final_idx), valid, converged

    def forward(
        self, images: torch.Tensor, image_sizes: torch.Tensor, lap: Callable[[str], None] | None = None
    ) -> tuple[torch.Tensor, ...]:
        """``lap(part)``, if given, is called after each part of :data:`PARTS` (for timing; under a CUDA
        graph the whole detector is one part, "postprocess"). Returns boxes, scores, classes, valid (see
        the class) and ``converged`` (Bool Tensor[]: False when the static NMS needs more rounds, then the
        caller runs the images again with exact NMS: :meth:`exact`)."""
        if self.graph is not None:
            return self.graph(images, image_sizes)
        return self.detect(images, image_sizes, lap)

    def detect(
        self, images: torch.Tensor, image_sizes: torch.Tensor, lap: Callable[[str], None] | None = None
    ) -> tuple[torch.Tensor, ...]:
        """:meth:`forward` run op by op (what a CUDA graph captures)."""
        lap = lap or (lambda part: None)
        features = dict(zip(self.spec["features"], self.run["backbone"](images)))
        lap("backbone")
        rpn_out = self.run["rpn_head"](*[features[f] for f in self.spec["rpn"]["in_features"]])
        logits, deltas = rpn_out[: self.num_levels], rpn_out[self.num_levels :]
        proposals, valid, rpn_converged = self.proposals(list(logits), list(deltas), image_sizes)
        lap("rpn")
        cls_logits, box_deltas = self.box_predictions(features, proposals)
        lap("roi_heads")
        *detections, converged = self.detections(cls_logits, box_deltas, proposals, valid, image_sizes)
        lap("postprocess")
        return (*detections, converged & rpn_converged)

    def exact(self, images: torch.Tensor, image_sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """:meth:`forward` with torchvision's exact NMS, outside any CUDA graph."""
        rounds, self.nms_iterations = self.nms_iterations, 0
        try:
            return self.detect(images, image_sizes)
        finally:
            self.nms_iterations = rounds


def onnx_session(model: str | bytes, threads: int, spinning: bool = False) -> Any:
    """An ONNX Runtime CPU session of ``model`` (a path or the serialized bytes) on ``threads`` threads.
    ``spinning``: its threads busy-wait between operators (fast for a graph of many small operators; wrong
    where torch ops run between sessions and need those cores)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxNetwork:
    """One network of a deployed folder run by ONNX Runtime on the CPU, with torch's thread count:
    ``network(*tensors) -> tuple of tensors``."""

    def __init__(self, path: Path, threads: int = 0):
        self.session = onnx_session(str(path), threads or torch.get_num_threads())
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feeds = {name: x.detach().contiguous().numpy() for name, x in zip(self.input_names, inputs)}
        return tuple(torch.from_numpy(y) for y in self.session.run(None, feeds))


class _Detections(nn.Module):
    """``DeployedDetector.detect`` without its ``converged`` flag (the exact NMS always converges)."""

    def __init__(self, detector: DeployedDetector):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.detector.detect(images, image_sizes)[:4]


class OnnxDetectorGraphs:
    """The whole detector, networks *and* everything between them (top-k, decoding, NMS, ROIAlign), as one
    ONNX Runtime graph per input shape: the CPU's counterpart of :class:`CudaGraphRunner`.

    A shape's graph is traced from the folder's TorchScript networks and :meth:`DeployedDetector.detect`
    (torchvision's NMS and ROIAlign become ONNX ``NonMaxSuppression`` and ``RoiAlign``) the first time the
    shape is seen: under a second for the built-in student. It then runs with no Python and no copies
    between the parts. ``graphs(images, image_sizes)`` returns what ``DeployedDetector.forward`` does, or
    None for a shape beyond the first ``max_graphs`` or when the exporter fails (said once, in the log):
    the caller then runs the networks one by one, with the same results up to float rounding.
    """

    def __init__(self, folder: Path, spec: dict[str, Any], threads: int, max_graphs: int = MAX_ONNX_GRAPHS):
        self.spec, self.threads, self.max_graphs = spec, threads, max_graphs
        # the networks to trace, read now: the folder may be gone by the first call (demo.py's temporary one)
        self.sources = {name: (Path(folder) / f).read_bytes() for name, f in NETWORK_FILES.items()}
        self.sessions: dict[tuple, Any] = {}
        self.failure: str | None = None  # why no graph could be made (then none is tried again)
        self._traced_from: _Detections | None = None

    def __call__(self, images: torch.Tensor, image_sizes: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        key = (tuple(images.shape), images.dtype)
        if key not in self.sessions:
            if self.failure is not None or len(self.sessions) >= self.max_graphs:
                return None
            session = self._build(images, image_sizes)
            if session is None:
                return None
            self.sessions[key] = session
        outputs = self.sessions[key].run(None, {"images": images.numpy(), "image_sizes": image_sizes.numpy()})
        return (*(torch.from_numpy(y) for y in outputs), torch.ones((), dtype=torch.bool))

    def _build(self, images: torch.Tensor, image_sizes: torch.Tensor) -> Any:
        if self._traced_from is None:
            networks = {name: torch.jit.load(io.BytesIO(data)) for name, data in self.sources.items()}
            self._traced_from = _Detections(DeployedDetector(networks, self.spec)).eval()
        buffer = io.BytesIO()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings: the shapes are fixed per graph on purpose
                traced = torch.jit.trace(self._traced_from, (images, image_sizes), check_trace=False)
                torch.onnx.export(
                    traced, (images, image_sizes), buffer, input_names=["images", "image_sizes"],
                    opset_version=17, dynamo=False,
                )  # fmt: skip
            return onnx_session(buffer.getvalue(), self.threads, spinning=True)  # no torch ops between
        except Exception as e:  # an exporter without the legacy path, or an operator it lacks
            self.failure = f"{e.__class__.__name__}: {' '.join(str(e).split())[:300]}"
            logging.getLogger(__name__).warning(
                f"No whole-detector ONNX graph ({self.failure}): the networks run one by one."
            )
            return None


def choose_backend(backend: str, spec: dict[str, Any], device: torch.device) -> str:
    """The backend that runs a deployed folder (see ``DeployedPredictor``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}.")
    if backend in ONNX_BACKENDS and (device.type != "cpu" or not spec.get("onnx")):
        raise ValueError(f"The {backend} backend runs on the CPU, from a folder that has ONNX networks.")
    if backend == GRAPH_BACKEND and spec["roi"]["kind"] != "fast_rcnn":
        raise ValueError(
            "R-FCN has no whole-detector ONNX graph (PS-ROIAlign has no ONNX operator): use the "
            "onnxruntime backend, which runs its networks one by one."
        )
    if backend != "auto":
        return backend
    if device.type == "cpu" and spec.get("onnx") and importlib.util.find_spec("onnxruntime") is not None:
        return GRAPH_BACKEND if spec["roi"]["kind"] == "fast_rcnn" else "onnxruntime"
    return "torchscript"


class CudaGraphRunner:
    """Run a module (or any function of tensors without host syncs) with static-shape inputs from CUDA
    graphs, one captured per input shape and dtype.

    The outputs are the graph's static tensors: they are overwritten by the next call, so consume them
    (the detector's post-processing does) before calling again.
    """

    def __init__(self, module: Callable[..., tuple], warmup: int = 3):
        self.module = module
        self.warmup = warmup
        self.graphs: dict[tuple, tuple[Any, tuple, tuple]] = {}

    def __call__(self, *inputs: torch.Tensor) -> tuple:
        key = tuple((tuple(x.shape), x.dtype, x.device) for x in inputs)
        if key not in self.graphs:
            static_in = tuple(x.clone() for x in inputs)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(self.warmup):
                    self.module(*static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.module(*static_in)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        for static, x in zip(static_in, inputs):
            static.copy_(x)
        graph.replay()
        return static_out


def resized_shape(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """(height, width) after detectron2's ``ResizeShortestEdge(short_edge, max_size)`` (0: no resize)."""
    if short_edge == 0:
        return height, width
    scale = short_edge / min(height, width)
    new_h, new_w = (short_edge, scale * width) if height < width else (scale * height, short_edge)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def to_model_format(image: np.ndarray, input_format: str) -> np.ndarray:
    """A uint8 BGR image array[H, W, 3] (``cv2.imread``) in the model's INPUT.FORMAT ("BGR", "RGB" or
    "L": array[H, W, 1], PIL's luma, as detectron2's ``read_image`` gives). A 2-D array is taken as gray."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if input_format == "BGR":
        return image
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    if input_format == "RGB":
        return rgb
    if input_format == "L":
        return np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None]
    raise ValueError(
        f"INPUT.FORMAT {input_format!r} is not supported by the deployed predictor: use BGR, RGB or L."
    )


class DeployedPredictor:
    """Load a deployed folder and predict: detectron2's ``DefaultPredictor``, for batches.

    ``predictor(image)`` takes one uint8 BGR array[H, W, 3] and returns ``{"instances": Instances}`` (as
    ``DefaultPredictor``); ``predictor.predict(images)`` takes a list of them, of any sizes, and runs them
    as one batch; ``predictor.model(batched_inputs)`` is a detectron2-style model (a list of
    ``{"image": Tensor[C, H, W] in the model's format, "height", "width"}``, as a test data loader
    gives) for ``inference_on_dataset``. Boxes are in the input images' coordinates.
    """

    def __init__(
        self,
        folder: str | Path,
        device: str = "cpu",
        *,
        cuda_graphs: bool = False,
        half: bool = False,
        optimize: bool = False,
        backend: str = "auto",
        static_nms_rounds: int = 0,
    ):
        """
        Args:
            folder: written by ``export_deployed`` (``python -m quant_mimic_tools.deploy``).
            device: "cpu" or "cuda[:i]".
            cuda_graphs: replay the whole detector from CUDA graphs, one per input shape (CUDA only):
                the NMS becomes the static-shape :func:`matrix_nms`, and the predictor's one wait for the
                device is the copy of the results.
            half: run the networks in float16 (CUDA only); boxes and scores stay float32.
            optimize: ``torch.jit.optimize_for_inference`` on the TorchScript networks (CPU).
            backend: "torchscript", "onnxruntime" (CPU; the folder's ``*.onnx`` networks, with the code
                between them run by torch), "onnxruntime_graph" (CPU, Faster R-CNN: the whole detector as
                one ONNX Runtime graph per input shape, :class:`OnnxDetectorGraphs`, the networks one by
                one for shapes without a graph) or "auto": the fastest available, measured on these CPUs
                (README): "onnxruntime_graph" (R-FCN: "onnxruntime") where ONNX Runtime is installed and
                the folder has ONNX networks, else "torchscript".
            static_nms_rounds: rounds of :func:`matrix_nms` instead of torchvision's NMS (0: torchvision's;
                with ``cuda_graphs`` 0 means :data:`STATIC_NMS_ROUNDS`). A batch whose static NMS did not
                converge runs again with exact NMS (counted in ``exact_reruns``).
        """
        folder = Path(folder)
        self.spec = load_spec(folder)
        self.device = torch.device(device)
        if (cuda_graphs or half) and self.device.type != "cuda":
            raise ValueError("cuda_graphs and half need a CUDA device.")
        self.backend = choose_backend(backend, self.spec, self.device)
        if static_nms_rounds and self.backend == GRAPH_BACKEND:
            if backend == GRAPH_BACKEND:
                raise ValueError(
                    "The onnxruntime_graph backend runs the exact NMS: leave static_nms_rounds at 0."
                )
            self.backend = "onnxruntime"  # the static NMS is run between the networks
        networks: dict[str, Any] = {}
        threads = torch.get_num_threads()
        for name, file in NETWORK_FILES.items():
            if self.backend in ONNX_BACKENDS:
                networks[name] = OnnxNetwork(folder / ONNX_FILES[name])
                continue
            net = torch.jit.load(str(folder / file), map_location=self.device)
            if half:
                net = net.half()
            net = torch.jit.freeze(net.eval())  # weights become constants of the graph
            if optimize and self.device.type == "cpu":
                net = torch.jit.optimize_for_inference(net)
            networks[name] = net
        self.dtype = torch.float16 if half else torch.float32
        self.detector = DeployedDetector(networks, self.spec).to(self.device).eval()
        if cuda_graphs:
            self.detector.use_cuda_graphs(static_nms_rounds or STATIC_NMS_ROUNDS)
        elif static_nms_rounds:
            self.detector.nms_iterations = static_nms_rounds
        self.graphs = (
            OnnxDetectorGraphs(folder, self.spec, threads) if self.backend == GRAPH_BACKEND else None
        )
        self.exact_reruns = 0  # batches run again with exact NMS (the static NMS did not converge)
        inp = self.spec["input"]
        self.input_format = inp["format"]
        self.pixel_mean = torch.tensor(inp["pixel_mean"], device=self.device).view(-1, 1, 1)
        self.pixel_std = torch.tensor(inp["pixel_std"], device=self.device).view(-1, 1, 1)
        self.metadata = {"thing_classes": self.spec["classes"]}

    def batch(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tensor[C, H, W] images (model format, 0-255) minus the pixel mean, padded with 0 into one
        Tensor[B, C, H', W'] (H', W' multiples of the backbone's size divisibility; detectron2 pads the
        normalised images with 0 too), and their sizes. The backbone network divides by the pixel std."""
        sizes = torch.tensor([list(im.shape[-2:]) for im in images], dtype=torch.int64)
        height, width = self.padded_size(*sizes.max(0).values.tolist())
        # only the padding is zeroed (below): zeroing the whole batch first was a third of this pass
        out = torch.empty(
            (len(images), len(self.pixel_mean), height, width), dtype=self.dtype, device=self.device
        )
        if self.device.type == "cuda":  # one copy of the whole batch from pinned memory (measured on an
            # H200: 32 pageable copies of 600 px images took 6.9 ms, half the student's batch-32 time)
            images = self._upload(images)
        for i, im in enumerate(images):  # uint8 images (as detectron2's loaders give) cross to a GPU as uint8
            # minus the pixel mean as they are copied in, so the networks do not make a pass of their own
            h, w = im.shape[-2:]
            torch.sub(im.to(self.device, non_blocking=True), self.pixel_mean, out=out[i, :, :h, :w])
            out[i, :, h:].zero_()
            out[i, :, :h, w:].zero_()
        return out, sizes.to(self.device, non_blocking=True)

    def _upload(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``images`` on the GPU, through one pinned host buffer and one copy (torch's pinned-memory cache
        keeps the buffer until the copy is done). Views of the GPU batch, each at its own size."""
        height, width = (max(im.shape[d] for im in images) for d in (-2, -1))
        host = torch.empty(
            (len(images), images[0].shape[0], height, width), dtype=images[0].dtype, pin_memory=True
        )
        for i, im in enumerate(images):
            host[i, :, : im.shape[-2], : im.shape[-1]].copy_(im)
        batch = host.to(self.device, non_blocking=True)
        return [batch[i, :, : im.shape[-2], : im.shape[-1]] for i, im in enumerate(images)]

    @torch.no_grad()
    def model(self, batched_inputs: Sequence[dict], lap: Callable[[str], None] | None = None) -> list[dict]:
        """Detectron2-style inference: ``[{"image", "height", "width"}] -> [{"instances": Instances}]``.
        ``lap(part)`` is called after each part (see ``DeployedDetector.forward``; "preprocess" too)."""
        if self.backend not in ONNX_BACKENDS or torch.get_num_threads() == 1:
            return self._model(batched_inputs, lap)
        # ONNX Runtime runs the networks on its own threads; the small tensor ops between them are
        # faster on one torch thread than split across several (measured: README, "Deployment").
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._model(batched_inputs, lap)
        finally:
            torch.set_num_threads(threads)

    def _model(self, batched_inputs: Sequence[dict], lap: Callable[[str], None] | None) -> list[dict]:
        images = [x["image"] for x in batched_inputs]
        results: list[dict] = [{} for _ in images]
        for group in self.size_groups(images):
            tensor, sizes = self.batch([images[i] for i in group])
            if lap is not None:
                lap("preprocess")
            outputs = self.graphs(tensor, sizes) if self.graphs is not None else None
            if outputs is None:  # (under a graph the whole detector is timed as "postprocess", as on CUDA)
                outputs = self.detector(tensor, sizes, lap)
            boxes, scores, classes, valid, converged = (t.cpu() for t in outputs)  # the one wait
            if not converged:  # the static NMS needed more rounds: rare; exact NMS for this batch
                self.exact_reruns += 1
                outputs = self.detector.exact(tensor, sizes)
                boxes, scores, classes, valid, _ = (t.cpu() for t in outputs)
            for j, i in enumerate(group):
                in_h, in_w = images[i].shape[-2:]
                out_size = (batched_inputs[i].get("height", in_h), batched_inputs[i].get("width", in_w))
                instances = to_instances(boxes[j], scores[j], classes[j], valid[j], (in_h, in_w), out_size)
                results[i] = {"instances": instances}
        return results

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The network input size of a ``height`` x ``width`` image (padded to the size divisibility)."""
        divisor = max(self.spec["input"]["size_divisibility"], 1)
        return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor

    def size_groups(self, images: Sequence[torch.Tensor]) -> list[list[int]]:
        """Indices of ``images`` grouped by padded size, each group one batch. Padding an image further
        than its own padded size would change its features near the border (the folded biases make the
        padding non-zero after the first conv), so images of one padded size run together and the
        results equal those of one image at a time."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(self.padded_size(*im.shape[-2:]), []).append(i)
        return list(groups.values())

    def preprocess(self, image: np.ndarray) -> dict:
        """One uint8 BGR image to the model's input dict (format, test-time resize, Tensor[C, H, W])."""
        height, width = image.shape[:2]
        image = to_model_format(image, self.input_format)
        inp = self.spec["input"]
        new_h, new_w = resized_shape(height, width, inp["min_size_test"], inp["max_size_test"])
        if (new_h, new_w) != (height, width):
            pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
            image = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))
            image = image[:, :, None] if image.ndim == 2 else image
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))  # uint8, as detectron2's
        return {"image": tensor, "height": height, "width": width}

    def predict(self, images: Sequence[np.ndarray]) -> list[dict]:
        """A batch of uint8 BGR images of any sizes -> one ``{"instances": Instances}`` each."""
        return self.model([self.preprocess(im) for im in images])

    def __call__(self, image: np.ndarray) -> dict:
        return self.predict([image])[0]

    def as_module(self) -> nn.Module:
        """:meth:`model` as an ``nn.Module`` (what detectron2's ``inference_on_dataset`` takes)."""
        return _PredictorModule(self)


class _PredictorModule(nn.Module):
    def __init__(self, predictor: DeployedPredictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, batched_inputs: Sequence[dict]) -> list[dict]:
        return self.predictor.model(batched_inputs)


def to_instances(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    valid: torch.Tensor,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
):
    """One image's fixed-size outputs as detectron2 ``Instances`` in ``output_size`` coordinates
    (``detector_postprocess``: rescale, clip, drop empty boxes)."""
    from detectron2.structures import Boxes, Instances

    (out_h, out_w), (in_h, in_w) = output_size, input_size
    keep = valid.numpy()  # numpy: a few microseconds per op on a hundred boxes, where torch takes tens
    xyxy = boxes.numpy()[keep] * np.array([out_w / in_w, out_h / in_h] * 2, dtype=np.float32)
    np.clip(xyxy, 0, np.array([out_w, out_h] * 2, dtype=np.float32), out=xyxy)
    nonempty = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    result = Instances(tuple(output_size))
    result.pred_boxes = Boxes(torch.from_numpy(xyxy[nonempty]))
    result.scores = torch.from_numpy(scores.numpy()[keep][nonempty])
    result.pred_classes = torch.from_numpy(classes.numpy()[keep][nonempty])
    return result


MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
# what deploy.json must hold for DeployedPredictor to run the folder
SPEC_KEYS = ("format_version", "features", "input", "rpn", "roi", "classes")


class DeployedFolderError(ValueError):
    """A deployed folder that is missing, incomplete, damaged or not this runtime's; the message is one
    sentence naming the file and saying "deploy again"."""


def file_sha256(path: str | Path) -> str:
    """The sha256 of the file ``path``, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_manifest(folder: str | Path) -> dict[str, Any]:
    """``manifest.json`` of a deployed folder, after checking that every file it lists is there with its
    size and sha256, and that no file the runtime reads is there without being listed. Returns it.

    Raises:
        DeployedFolderError: the folder or a file is missing, truncated, altered or foreign, or the
            manifest itself is damaged.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    if not folder.is_dir() or not (manifest_path.is_file() or (folder / DEPLOY_FILE).is_file()):
        raise DeployedFolderError(
            f"{folder / DEPLOY_FILE} does not exist: {folder} is not a deployed model; write one with "
            "`python -m quant_mimic_tools.deploy --config-file ... --output DIR` (deploy again)."
        )
    if not manifest_path.is_file():
        raise DeployedFolderError(
            f"{manifest_path} does not exist: {folder} was written by an older version or not completely; "
            "deploy again."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        version = manifest["manifest_version"]
        entries = {name: (int(e["size"]), str(e["sha256"])) for name, e in files.items()}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DeployedFolderError(
            f"{manifest_path} is damaged ({type(e).__name__}: {e}); deploy again."
        ) from None
    if version != MANIFEST_VERSION:
        raise DeployedFolderError(
            f"{manifest_path} has manifest version {version}, this runtime reads {MANIFEST_VERSION}: deploy again."
        )
    for name, (size, sha256) in entries.items():
        path = folder / name
        if Path(name).name != name or name in ("", ".", ".."):
            raise DeployedFolderError(
                f"{manifest_path} lists {name!r}, which is not a file of the folder: deploy again."
            )
        if not path.is_file():
            raise DeployedFolderError(f"{path} is missing ({manifest_path} lists it): deploy again.")
        actual = path.stat().st_size
        if actual != size:
            raise DeployedFolderError(
                f"{path} has {actual} bytes, not the {size} that {manifest_path} lists (truncated, altered or "
                "from another deployed folder): deploy again."
            )
        if file_sha256(path) != sha256:
            raise DeployedFolderError(
                f"{path} does not match its sha256 in {manifest_path} (altered, or from another deployed "
                "folder): deploy again."
            )
    for name in (DEPLOY_FILE, *NETWORK_FILES.values(), *ONNX_FILES.values()):
        if name not in entries and (folder / name).exists():
            raise DeployedFolderError(
                f"{folder / name} is not part of this deployed folder (not in {manifest_path}): deploy again."
            )
    if DEPLOY_FILE not in entries:
        raise DeployedFolderError(f"{manifest_path} does not list {DEPLOY_FILE}: deploy again.")
    return manifest


def load_spec(folder: str | Path) -> dict[str, Any]:
    """``deploy.json`` of a deployed folder, checked: first every file against ``manifest.json``
    (:func:`check_manifest`), then deploy.json itself. Raises DeployedFolderError."""
    check_manifest(folder)
    path = Path(folder) / DEPLOY_FILE
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DeployedFolderError(
            f"{path} is not valid JSON ({type(e).__name__}: {e}); deploy again."
        ) from None
    missing = [k for k in SPEC_KEYS if k not in spec] if isinstance(spec, dict) else list(SPEC_KEYS)
    if missing:
        raise DeployedFolderError(f"{path} lacks {', '.join(missing)}: deploy again.")
    if spec.get("format_version") != FORMAT_VERSION:
        raise DeployedFolderError(
            f"{path} has format version {spec.get('format_version')}, this runtime reads {FORMAT_VERSION}: "
            "deploy the model again with this version."
        )
    return spec
