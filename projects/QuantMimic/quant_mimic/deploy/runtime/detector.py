"""The deployed detector between its networks (top-k, decoding, NMS, ROIAlign), batched and sync-free,
and its replay from CUDA graphs."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import ps_roi_align, roi_align

from .boxes import (
    MAX_STATIC_NMS_TOPK,
    STATIC_NMS_ROUNDS,
    clip_boxes,
    decode_boxes,
    finite,
    grid_anchors,
    grouped_nms,
    keep_mask,
    matrix_nms,
)


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
        """``lap(part)``, if given, is called after each part: "backbone", "rpn", "roi_heads", "postprocess"
        (the parts of ``quant_mimic.timing.PARTS`` after "preprocess", for timing; under a CUDA
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
