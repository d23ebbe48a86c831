"""``QuantMimicRCNN``: a student GeneralizedRCNN that mimics a frozen (quantized) teacher GeneralizedRCNN.

In training it runs the student as detectron2 does, then pools the student's sampled proposals from the
teacher's and the student's feature maps with the same ROIAlign settings, at the student head's RoI size
(7x7 for Faster R-CNN, k x k = 3x3 for R-FCN), adapts the student's RoI features to the teacher's
channels with r(), and adds ``loss_mimic`` (its own ``MimicLoss``) to the student's detection losses,
logging the paper's matching ratio as ``mimic/matching_ratio``. detectron2's training step runs
unchanged. In inference it is the student alone and returns standard detectron2 outputs.
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels, convert_boxes_to_pooler_format
from detectron2.structures import Boxes
from detectron2.utils.events import get_event_storage
from torch import nn

from ..config import load_teacher_config, student_config
from ..errors import QuantMimicInputError
from .mimic_loss import MimicFeatures, MimicLoss

# Where mimicked maps come from: the backbone's outputs, or an FPN's bottom-up stages.
BACKBONE, BOTTOM_UP = "backbone", "bottom_up"
# ROI_HEADS.NAME of the R-FCN head, whose RoI size is MODEL.RFCN.POOL_SIZE.
RFCN_HEAD_NAME = "RFCNROIHeads"


def mimic_pooler(cfg: CfgNode, strides: list[int]) -> ROIPooler:
    """ROIAlign at the student head's RoI size: ``MODEL.RFCN.POOL_SIZE`` (k x k, paper: 3x3) for an
    R-FCN head (``RFCNROIHeads``, pooled with ROIAlignV2 like its ps_roi_align), else
    ``ROI_BOX_HEAD.POOLER_RESOLUTION`` (paper: 7x7) with ``ROI_BOX_HEAD.POOLER_TYPE``."""
    box_head = cfg.MODEL.ROI_BOX_HEAD
    if cfg.MODEL.ROI_HEADS.NAME == RFCN_HEAD_NAME:
        output_size, pooler_type = cfg.MODEL.RFCN.POOL_SIZE, "ROIAlignV2"
    else:
        output_size, pooler_type = box_head.POOLER_RESOLUTION, box_head.POOLER_TYPE
    return ROIPooler(
        output_size=output_size,
        scales=tuple(1.0 / s for s in strides),
        sampling_ratio=box_head.POOLER_SAMPLING_RATIO,
        pooler_type=pooler_type,
    )


def feature_part(model: GeneralizedRCNN, part: str) -> nn.Module:
    """``model.backbone`` (``part`` "backbone") or its FPN's bottom-up network ("bottom_up")."""
    return model.backbone if part == BACKBONE else model.backbone.bottom_up


def maps_part(model: GeneralizedRCNN, features: list[str]) -> tuple[str, dict]:
    """Which part of ``model`` outputs the maps ``features`` (the backbone, else an FPN's bottom-up
    network) and that part's output shapes; ("", {}) where neither has them all."""
    shapes = model.backbone.output_shape()
    if all(f in shapes for f in features):
        return BACKBONE, shapes
    bottom_up = getattr(model.backbone, "bottom_up", None)
    if bottom_up is not None and all(f in bottom_up.output_shape() for f in features):
        return BOTTOM_UP, bottom_up.output_shape()
    return "", {}


def pooling_settings(layer: nn.Module) -> tuple:
    """What decides an ROIPooler level's output: its kind, size, scale, sampling and alignment
    (RoIPool layers have neither ``sampling_ratio`` nor ``aligned``)."""
    return (
        type(layer),
        layer.output_size,
        layer.spatial_scale,
        getattr(layer, "sampling_ratio", None),
        getattr(layer, "aligned", None),
    )


class FrozenTeacher(nn.Module):
    """A GeneralizedRCNN whose parameters never get gradients and that stays in eval mode
    (BatchNorm statistics never change), whatever ``.train()`` is called with."""

    def __init__(self, model: GeneralizedRCNN, cfg: CfgNode | None = None):
        super().__init__()
        self.model = model
        self.cfg = cfg  # the teacher's config, kept for its checks (not part of the state dict)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> FrozenTeacher:
        super().train(False)
        return self

    @torch.no_grad()
    def features(
        self, batched_inputs: list[dict], images: torch.Tensor | None = None, part: str = BACKBONE
    ) -> dict[str, torch.Tensor]:
        """Backbone (+FPN) features only: the teacher's RPN and heads never run (``part`` "bottom_up":
        an FPN's bottom-up stage outputs only; its top-down path does not run either). ``images``: the
        batch already normalized and padded as this teacher would (see :meth:`same_inputs_as`)."""
        if images is None:
            images = self.model.preprocess_image(batched_inputs).tensor
        return feature_part(self.model, part)(images)

    def same_inputs_as(self, model: GeneralizedRCNN) -> bool:
        """Whether ``model`` turns a batch into the very tensor this teacher's backbone reads: the same
        input format, pixel mean and std, and padding."""
        mine = self.model

        def padding(m: GeneralizedRCNN) -> tuple:
            return m.backbone.size_divisibility, getattr(m.backbone, "padding_constraints", None)

        return (
            mine.input_format == model.input_format
            and torch.equal(mine.pixel_mean.cpu(), model.pixel_mean.cpu())
            and torch.equal(mine.pixel_std.cpu(), model.pixel_std.cpu())
            and padding(mine) == padding(model)
        )


@META_ARCH_REGISTRY.register()
class QuantMimicRCNN(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        student: GeneralizedRCNN,
        teacher: GeneralizedRCNN,
        teacher_cfg: CfgNode | None = None,
        in_features: list[str],
        part: str = BACKBONE,
        pooler: ROIPooler,
        adapter: nn.Module,
        mimic_loss: MimicLoss,
        num_rois_per_image: int,
    ):
        """
        Args:
            student / teacher: detectron2 GeneralizedRCNNs; the teacher is frozen here.
            in_features: feature maps the RoIs are pooled from (MODEL.QUANT_MIMIC.IN_FEATURES, default
                the student's ROI_HEADS.IN_FEATURES); both networks must produce them at the same strides.
            part: where both networks output them: "backbone", or "bottom_up" (an FPN's bottom-up stages).
            pooler: ROIAlign over ``in_features``: Tensor[N, C, R, R] per network.
            adapter: r(), Tensor[N, C_student, R, R] -> Tensor[N, C_teacher, R, R]; or, where the maps
                have a channel count per level, an ``nn.ModuleList`` with one such conv per level (each
                RoI then pooled from its level alone, the pooler's level assignment).
            mimic_loss: lambda * L_m and the matching ratio of the pooled RoI features (no parameters).
            num_rois_per_image: sampled proposals per image used for mimicking.
        """
        super().__init__()
        self.student = student
        self.teacher = FrozenTeacher(teacher, teacher_cfg)
        self.in_features = in_features
        self.part = part
        self.pooler = pooler
        self.adapter = adapter
        self.mimic_loss = mimic_loss
        self.num_rois_per_image = num_rois_per_image
        # the teacher reads the student's normalized, padded batch where it would compute the same one
        self.teacher_shares_images = self.teacher.same_inputs_as(student)

    @classmethod
    def from_config(cls, cfg: CfgNode, teacher_cfg: CfgNode | None = None) -> dict:
        """``teacher_cfg``: the teacher's config as the run read it (default: read here, from
        MODEL.QUANT_MIMIC.TEACHER_CONFIG)."""
        student = GeneralizedRCNN(student_config(cfg))
        teacher_cfg = load_teacher_config(cfg) if teacher_cfg is None else teacher_cfg
        teacher = GeneralizedRCNN(teacher_cfg)
        in_features = list(cfg.MODEL.QUANT_MIMIC.IN_FEATURES or cfg.MODEL.ROI_HEADS.IN_FEATURES)
        part, s_shape = maps_part(student, in_features)
        if not part:
            raise QuantMimicInputError(
                f"MODEL.QUANT_MIMIC.IN_FEATURES {in_features} are not maps of the student's backbone or of "
                "its FPN's bottom-up network: name its outputs (e.g. p2..p5) or its stages (res2..res5)."
            )
        t_part, t_shape = maps_part(teacher, in_features)
        t_shape = t_shape if t_part == part else {}
        for f in in_features:
            if f not in t_shape or t_shape[f].stride != s_shape[f].stride:
                raise QuantMimicInputError(
                    f"The teacher ({cfg.MODEL.QUANT_MIMIC.TEACHER_CONFIG}) has no feature map {f} at the "
                    f"student's stride {s_shape[f].stride}: use a teacher with the same FPN levels."
                )
        pooler = mimic_pooler(cfg, [s_shape[f].stride for f in in_features])
        kernel = cfg.MODEL.QUANT_MIMIC.ADAPT_KERNEL_SIZE
        if kernel not in (1, 3):
            raise QuantMimicInputError(f"MODEL.QUANT_MIMIC.ADAPT_KERNEL_SIZE is {kernel}: use 1 or 3.")
        convs = [
            nn.Conv2d(s_shape[f].channels, t_shape[f].channels, kernel, padding=kernel // 2)
            for f in in_features
        ]
        same = len({(c.in_channels, c.out_channels) for c in convs}) == 1
        adapter = convs[0] if same else nn.ModuleList(convs)
        num_rois = cfg.MODEL.QUANT_MIMIC.NUM_ROIS_PER_IMAGE
        if not 0 < num_rois <= cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE:
            raise QuantMimicInputError(
                f"MODEL.QUANT_MIMIC.NUM_ROIS_PER_IMAGE is {num_rois}: use 1 to "
                f"ROI_HEADS.BATCH_SIZE_PER_IMAGE ({cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE})."
            )
        return {
            "student": student,
            "teacher": teacher,
            "teacher_cfg": teacher_cfg,
            "in_features": in_features,
            "part": part,
            "pooler": pooler,
            "adapter": adapter,
            "mimic_loss": MimicLoss(cfg, teacher_cfg),
            "num_rois_per_image": num_rois,
        }

    @property
    def device(self) -> torch.device:
        return self.student.device

    def forward(self, batched_inputs: list[dict]):
        """Training: the student's losses (``GeneralizedRCNN.forward`` itself, with its training
        visualisation) plus ``loss_mimic`` on the first NUM_ROIS_PER_IMAGE proposals its ROI heads
        sampled; logs ``mimic/matching_ratio`` (mean over those RoIs). Inference: the student's outputs
        (list of {"instances"})."""
        if not self.training:
            return self.student(batched_inputs)
        losses, features = self.losses_and_mimic_features(batched_inputs)
        mimic, matching_ratio = self.mimic_loss.loss_and_matching_ratio(features)
        losses.update(mimic)
        get_event_storage().put_scalar("mimic/matching_ratio", matching_ratio.mean().item())
        return losses

    def losses_and_mimic_features(self, batched_inputs: list[dict]) -> tuple[dict, MimicFeatures]:
        """Training mode: the student's detection losses, and the RoI features the mimic loss compares
        for the first NUM_ROIS_PER_IMAGE proposals the student's ROI heads sampled per image."""
        seen: dict = {}
        hooks = [
            self.student.backbone.register_forward_hook(lambda m, i, out: seen.update(images=i[0])),
            feature_part(self.student, self.part).register_forward_hook(
                lambda m, i, out: seen.__setitem__("features", out)
            ),
            # ROI heads return (sampled proposals, losses) in training
            self.student.roi_heads.register_forward_hook(
                lambda m, i, out: seen.__setitem__("sampled", out[0])
            ),
        ]
        box_pooler = self.reusable_box_pooler()
        if box_pooler is not None:  # the box head's RoI features of the sampled proposals, pooled once
            hooks.append(box_pooler.register_forward_hook(lambda m, i, out: seen.setdefault("pooled", out)))
        try:
            losses = self.student(batched_inputs)
        finally:
            for hook in hooks:
                hook.remove()
        sampled = seen["sampled"]
        boxes = [p.proposal_boxes[: self.num_rois_per_image] for p in sampled]
        student_rois = None
        if "pooled" in seen:
            student_rois = seen["pooled"]  # every sampled proposal mimicked: the box head's tensor as it is
            if any(len(b) != len(p) for b, p in zip(boxes, sampled)):
                starts = [0]
                for p in sampled[:-1]:
                    starts.append(starts[-1] + len(p))
                index = torch.cat(
                    [torch.arange(len(b), device=self.device) + s for b, s in zip(boxes, starts)]
                )
                student_rois = student_rois[index]
        images = seen["images"] if self.teacher_shares_images else None
        return losses, self.mimic_features(batched_inputs, seen["features"], boxes, student_rois, images)

    def reusable_box_pooler(self) -> ROIPooler | None:
        """The student's box-head pooler where it pools exactly as the mimic pooler does (same feature
        maps, RoI size, ROIAlign kind, scales and sampling): its output for the sampled proposals then
        holds the student's mimic RoI features, so they are not pooled a second time. None otherwise
        (R-FCN heads have no box pooler)."""
        pooler = getattr(self.student.roi_heads, "box_pooler", None)
        if not isinstance(pooler, ROIPooler) or list(self.student.roi_heads.in_features) != self.in_features:
            return None
        same = [
            pooling_settings(a) == pooling_settings(b)
            for a, b in zip(pooler.level_poolers, self.pooler.level_poolers)
        ]
        size = (pooler.output_size, pooler.canonical_box_size, pooler.canonical_level)
        if len(same) == len(self.pooler.level_poolers) and all(same) and size == (
            self.pooler.output_size, self.pooler.canonical_box_size, self.pooler.canonical_level
        ):  # fmt: skip
            return pooler
        return None

    def mimic_features(
        self,
        batched_inputs: list[dict],
        student_features: dict[str, torch.Tensor],
        boxes: list[Boxes],
        student_rois: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
    ) -> MimicFeatures:
        """The RoI features the mimic loss compares: ``boxes`` (one Boxes per image, input-image
        coordinates) pooled from the teacher's feature maps (computed here, no gradient) and from
        ``student_features``, the student's adapted by r(). Both Tensor[sum(len(b)), C_teacher, R, R].
        ``student_rois``: the student's RoI features of ``boxes`` where already pooled (see
        :meth:`reusable_box_pooler`). ``images``: the student's normalized, padded batch, where the
        teacher reads the same (``teacher_shares_images``)."""
        teacher_features = self.teacher.features(batched_inputs, images, self.part)
        teacher_maps = [teacher_features[f] for f in self.in_features]
        student_maps = [student_features[f] for f in self.in_features]
        if isinstance(self.adapter, nn.ModuleList):  # a channel count per level: pooled level by level
            teacher_rois, student_rois = (
                self.pool_per_level(teacher_maps, boxes),
                self.pool_per_level(student_maps, boxes),
            )
            adapted = tuple(r(x) for r, x in zip(self.adapter, student_rois))
            return MimicFeatures(teacher=tuple(teacher_rois), student=adapted)
        teacher_rois = self.pooler(teacher_maps, boxes)
        if student_rois is None:
            student_rois = self.pooler(student_maps, boxes)
        return MimicFeatures(teacher=teacher_rois, student=self.adapter(student_rois))

    def pool_per_level(self, maps: list[torch.Tensor], boxes: list[Boxes]) -> list[torch.Tensor]:
        """The mimic pooler's ROIAlign, level by level: Tensor[N_l, C_l, R, R] for the boxes the pooler
        assigns to level l (by box size, as the box head's pooler does), in their order within ``boxes``."""
        pooler = self.pooler
        levels = assign_boxes_to_levels(
            boxes, pooler.min_level, pooler.max_level, pooler.canonical_box_size, pooler.canonical_level
        )
        rois = convert_boxes_to_pooler_format(boxes)
        return [
            layer(x, rois[levels == level])
            for level, (x, layer) in enumerate(zip(maps, pooler.level_poolers))
        ]

    def student_maps(self, images: torch.Tensor, backbone_features: dict) -> dict[str, torch.Tensor]:
        """The student's maps the mimic RoIs are pooled from, for a batch ``images`` (normalized,
        padded) whose backbone outputs are ``backbone_features``."""
        return backbone_features if self.part == BACKBONE else feature_part(self.student, self.part)(images)

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """The student's weights alone, loadable into a plain GeneralizedRCNN."""
        return self.student.state_dict()
