"""R-FCN (Dai et al., NIPS 2016) box head for detectron2: the paper's WIDER FACE detector.

One 1x1 conv turns the last feature map into ``k*k*(C+1)`` position-sensitive class score maps and
another into ``k*k*4`` (class-agnostic) or ``k*k*4*C`` box maps. Each RoI is split into ``k x k``
bins; bin ``(i, j)`` reads only its own group of maps (``torchvision.ops.ps_roi_align``) and the
``k*k`` bins are averaged ("voting") into ``C+1`` logits and the box deltas. Losses (softmax cross
entropy, smooth-L1 on foreground deltas) and inference (per-class NMS) are detectron2's
:class:`FastRCNNOutputLayers` ones; proposal sampling is detectron2's :class:`ROIHeads` one, with
optional online hard example mining (OHEM) on top. Select it with
``MODEL.ROI_HEADS.NAME: "RFCNROIHeads"`` and one ``ROI_HEADS.IN_FEATURES`` map (e.g. ``["vgg5"]``); its
``MODEL.RFCN.*`` keys are defined in :mod:`quant_mimic.config`.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, ROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Boxes, ImageList, Instances
from fvcore.nn import smooth_l1_loss
from torch import nn
from torchvision.ops import ps_roi_align

__all__ = ["PSRoIPredictor", "RFCNROIHeads"]

# Initial weight std of the score and box convs (detectron2's FastRCNNOutputLayers values).
CLS_INIT_STD = 0.01
BOX_INIT_STD = 0.001


class PSRoIPredictor(FastRCNNOutputLayers):
    """Position-sensitive score maps, ``ps_roi_align`` and average voting.

    ``forward(feature Tensor[B, C_in, H, W], boxes list[Boxes]) -> (scores Tensor[N, K+1],
    deltas Tensor[N, 4] or Tensor[N, 4K])``, N = total boxes: the same predictions as
    :class:`FastRCNNOutputLayers`, whose ``losses``, ``inference``, ``predict_boxes`` and
    ``predict_probs`` are used unchanged. Its two fc layers are replaced by the 1x1 convs
    ``cls_score`` (C_in -> k*k*(K+1)) and ``bbox_pred`` (C_in -> k*k*4 or k*k*4K).
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        pool_size: int = 3,
        reduce_dim: int = 0,
        sampling_ratio: int = 0,
        **kwargs,
    ):
        """
        Args:
            input_shape: channels and stride of the feature map the RoIs are pooled from.
            pool_size: k, bins per RoI side.
            reduce_dim: channels of an optional 1x1 conv + ReLU before the score maps (0 = none).
            sampling_ratio: ps_roi_align sampling points per bin side (0 = adaptive).
            kwargs: :class:`FastRCNNOutputLayers`' own arguments (classes, class-agnostic regression,
                box transform, losses, test settings), whichever the installed detectron2 has.
        """
        if pool_size < 1:
            raise ValueError(f"MODEL.RFCN.POOL_SIZE must be >= 1, got {pool_size}")
        if not input_shape.stride:
            raise ValueError("The R-FCN input feature needs a stride")
        channels = reduce_dim if reduce_dim > 0 else input_shape.channels
        # Sets every attribute losses() and inference() read; its fc layers are replaced below.
        super().__init__(ShapeSpec(channels=channels), **kwargs)
        self.pool_size = pool_size
        self.spatial_scale = 1.0 / input_shape.stride
        self.sampling_ratio = sampling_ratio
        self.reduce: nn.Module | None = None
        if reduce_dim > 0:
            self.reduce = nn.Conv2d(input_shape.channels, reduce_dim, kernel_size=1)
            nn.init.kaiming_normal_(self.reduce.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(self.reduce.bias, 0)
        bins = pool_size * pool_size
        self.cls_score = nn.Conv2d(channels, bins * self.cls_score.out_features, kernel_size=1)
        self.bbox_pred = nn.Conv2d(channels, bins * self.bbox_pred.out_features, kernel_size=1)
        for layer, std in ((self.cls_score, CLS_INIT_STD), (self.bbox_pred, BOX_INIT_STD)):
            nn.init.normal_(layer.weight, std=std)
            nn.init.constant_(layer.bias, 0)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: ShapeSpec) -> dict:
        ret = super().from_config(cfg, input_shape)
        ret.update(
            pool_size=cfg.MODEL.RFCN.POOL_SIZE,
            reduce_dim=cfg.MODEL.RFCN.REDUCE_DIM,
            sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
            cls_agnostic_bbox_reg=cfg.MODEL.RFCN.CLS_AGNOSTIC_BBOX_REG,
        )
        return ret

    def score_maps(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``Tensor[B, C_in, H, W] -> (Tensor[B, k*k*(K+1), H, W], Tensor[B, k*k*4R, H, W])``; channel
        ``c * k*k + i*k + j`` is class (or box coordinate) ``c`` at bin ``(i, j)``."""
        if self.reduce is not None:
            x = F.relu(self.reduce(x))
        return self.cls_score(x), self.bbox_pred(x)

    def pool(self, maps: torch.Tensor, boxes: List[Boxes]) -> torch.Tensor:
        """Position-sensitive RoIAlign: ``Tensor[B, k*k*D, H, W] -> Tensor[N, D, k, k]``."""
        return ps_roi_align(
            maps, [b.tensor for b in boxes], self.pool_size, self.spatial_scale, self.sampling_ratio
        )

    def forward(self, x: torch.Tensor, boxes: List[Boxes]) -> Tuple[torch.Tensor, torch.Tensor]:
        cls_maps, box_maps = self.score_maps(x)
        scores = self.pool(cls_maps, boxes).mean(dim=(2, 3))  # average voting over the k*k bins
        deltas = self.pool(box_maps, boxes).mean(dim=(2, 3))
        return scores, deltas

    def per_roi_losses(
        self, predictions: Tuple[torch.Tensor, torch.Tensor], proposals: List[Instances]
    ) -> torch.Tensor:
        """Tensor[N]: each RoI's cross entropy + smooth-L1 box loss (0 for background), the OHEM ranking."""
        scores, deltas = predictions
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        loss = F.cross_entropy(scores, gt_classes, reduction="none")
        fg = (gt_classes >= 0) & (gt_classes < self.num_classes)
        if fg.any():
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)[fg]
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0
            )[fg]
            box_dim = proposal_boxes.shape[1]
            fg_deltas = deltas[fg]
            if deltas.shape[1] != box_dim:  # per-class regression: the gt class's deltas
                fg_deltas = fg_deltas.view(-1, self.num_classes, box_dim)[
                    torch.arange(len(fg_deltas), device=deltas.device), gt_classes[fg]
                ]
            target = self.box2box_transform.get_deltas(proposal_boxes, gt_boxes)
            box_loss = smooth_l1_loss(fg_deltas, target, self.smooth_l1_beta, reduction="none").sum(dim=1)
            loss = loss.index_put((fg.nonzero(as_tuple=True)[0],), box_loss, accumulate=True)
        return loss


@ROI_HEADS_REGISTRY.register()
class RFCNROIHeads(ROIHeads):
    """R-FCN head: ``forward(images, features, proposals, targets)`` returns, like
    :class:`StandardROIHeads`, ``(sampled proposals, losses)`` in training (the OHEM-kept RoIs when
    OHEM is on, in sampling order: foreground first) and ``(list[Instances], {})`` in inference, with
    ``pred_boxes``, ``scores`` and ``pred_classes``."""

    @configurable
    def __init__(
        self,
        *,
        in_feature: str,
        predictor: PSRoIPredictor,
        ohem_batch_size_per_image: int = 0,
        **kwargs,
    ):
        """
        Args:
            in_feature: the feature map the RoIs are pooled from.
            predictor: score maps + voting; its losses and inference are used.
            ohem_batch_size_per_image: RoIs per image kept by OHEM; 0 = no OHEM (all sampled RoIs).
            kwargs: :class:`ROIHeads` arguments (sampling of ``batch_size_per_image`` proposals).
        """
        super().__init__(**kwargs)
        if ohem_batch_size_per_image < 0:
            raise ValueError(
                f"MODEL.RFCN.OHEM_BATCH_SIZE_PER_IMAGE must be >= 0, got {ohem_batch_size_per_image}"
            )
        self.in_feature = in_feature
        self.predictor = predictor
        self.ohem_batch_size_per_image = ohem_batch_size_per_image

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: Dict[str, ShapeSpec]) -> dict:
        ret = super().from_config(cfg)
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        if len(in_features) != 1 or in_features[0] not in input_shape:
            raise ValueError(
                f"RFCNROIHeads pools from one feature map: MODEL.ROI_HEADS.IN_FEATURES={in_features} must name "
                f"exactly one of the backbone's outputs {sorted(input_shape)}"
            )
        rfcn = cfg.MODEL.RFCN
        if rfcn.OHEM and cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE != "smooth_l1":
            raise ValueError(
                "MODEL.RFCN.OHEM ranks RoIs by the smooth-L1 box loss: set BBOX_REG_LOSS_TYPE smooth_l1"
            )
        ret.update(
            in_feature=in_features[0],
            predictor=PSRoIPredictor(cfg, input_shape[in_features[0]]),
            ohem_batch_size_per_image=rfcn.OHEM_BATCH_SIZE_PER_IMAGE if rfcn.OHEM else 0,
        )
        return ret

    @torch.no_grad()
    def hard_example_indices(
        self, predictions: Tuple[torch.Tensor, torch.Tensor], proposals: List[Instances]
    ) -> List[torch.Tensor]:
        """Per image, the indices (ascending) of its ``ohem_batch_size_per_image`` RoIs with the
        highest loss (all of them if it has fewer)."""
        losses = self.predictor.per_roi_losses(predictions, proposals).split([len(p) for p in proposals])
        keep = []
        for loss in losses:
            k = min(self.ohem_batch_size_per_image, len(loss))
            keep.append(loss.topk(k).indices.sort().values)
        return keep

    def select_hard_examples(
        self, predictions: Tuple[torch.Tensor, torch.Tensor], proposals: List[Instances]
    ) -> Tuple[Tuple[torch.Tensor, torch.Tensor], List[Instances]]:
        """OHEM: the predictions (Tensor[M, K+1], Tensor[M, 4R]) and proposals of the hardest RoIs."""
        keep = self.hard_example_indices(predictions, proposals)
        offsets = torch.tensor([0] + [len(p) for p in proposals[:-1]], device=predictions[0].device).cumsum(0)
        flat = cat([k + o for k, o in zip(keep, offsets)], dim=0)
        return (predictions[0][flat], predictions[1][flat]), [p[k] for p, k in zip(proposals, keep)]

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: List[Instances] | None = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        del images
        if self.training:
            assert targets, "'targets' argument is required during training"
            proposals = self.label_and_sample_proposals(proposals, targets)
        del targets
        predictions = self.predictor(features[self.in_feature], [p.proposal_boxes for p in proposals])
        if self.training:
            if self.ohem_batch_size_per_image > 0:
                predictions, proposals = self.select_hard_examples(predictions, proposals)
            return proposals, self.predictor.losses(predictions, proposals)
        pred_instances, _ = self.predictor.inference(predictions, proposals)
        return pred_instances, {}
