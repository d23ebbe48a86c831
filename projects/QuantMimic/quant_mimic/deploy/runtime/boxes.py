"""Box operations of the deployed detector on fixed-size batches: anchors, decoding, clipping, and NMS
(torchvision's, grouped, and a static-shape one for CUDA graphs)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torchvision.ops import batched_nms

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
