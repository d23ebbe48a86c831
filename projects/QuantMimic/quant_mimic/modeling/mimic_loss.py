"""The mimic loss L_m = lambda / (2N) * sum_i || Q(f_t^i) - Q(r(f_s^i)) ||^2 (paper Eq. 3) and the
paper's matching ratio. Parameter-free: a submodule of ``QuantMimicRCNN`` (meta_arch.py), which calls it
from its own forward; the adaptation conv r() is the model's, so DistributedDataParallel synchronises
its gradients."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from detectron2.config import CfgNode, configurable
from torch import nn

from ..config import mimic_quantizer
from .quantizer import Quantizer

NORMALIZATIONS = ("per_element", "as_written")


@dataclass
class MimicFeatures:
    """The RoI features the mimic loss compares, pooled from the same boxes.

    teacher: Tensor[N, C, R, R], no gradient. student: Tensor[N, C, R, R], already adapted by r().
    Where the mimicked maps have a channel count per level: tuples with one such tensor per level
    (Tensor[N_l, C_l, R, R], the RoIs the pooler assigned to level l).
    """

    teacher: torch.Tensor | tuple[torch.Tensor, ...]
    student: torch.Tensor | tuple[torch.Tensor, ...]

    def levels(self) -> list[MimicFeatures]:
        """One ``MimicFeatures`` of tensors per level (itself where it holds tensors)."""
        if isinstance(self.teacher, torch.Tensor):
            return [self]
        return [MimicFeatures(t, s) for t, s in zip(self.teacher, self.student)]


class MimicLoss(nn.Module):
    """``(MimicFeatures) -> {"loss_mimic": scalar}``; also reports the matching ratio."""

    @configurable
    def __init__(
        self,
        *,
        weight: float,
        normalize: str,
        quantizer: Quantizer,
        quantize_teacher: bool,
        quantize_student: bool,
        feature_relu: bool,
        match_threshold: float,
    ):
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"Unknown mimic loss normalisation {normalize!r}: use one of {NORMALIZATIONS}.")
        self.weight = weight
        self.normalize = normalize
        self.quantizer = quantizer
        self.quantize_teacher = quantize_teacher
        self.quantize_student = quantize_student
        self.feature_relu = feature_relu
        self.match_threshold = match_threshold

    @classmethod
    def from_config(cls, cfg: CfgNode, teacher_cfg: CfgNode | None = None) -> dict:
        """``teacher_cfg``: the teacher's config, whose quantizer the loss's follows where
        MODEL.QUANT_MIMIC.QUANTIZER_TYPE / _STRIDE are unset (default: read from TEACHER_CONFIG)."""
        qm = cfg.MODEL.QUANT_MIMIC
        kind, stride = mimic_quantizer(cfg, teacher_cfg)
        return {
            "weight": qm.LOSS_WEIGHT,
            "normalize": qm.NORMALIZE,
            "quantizer": Quantizer(stride, kind),
            "quantize_teacher": qm.QUANTIZE_TEACHER,
            "quantize_student": qm.QUANTIZE_STUDENT,
            "feature_relu": qm.FEATURE_RELU,
            "match_threshold": qm.MATCH_THRESHOLD,
        }

    def compared(self, features: MimicFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """The two tensors the loss compares: optional ReLU, then Q on each side if switched on."""
        teacher, student = features.teacher.detach(), features.student
        if self.feature_relu:
            student = torch.relu(student)
            if not self.quantize_teacher:  # Q already maps negatives to 0
                teacher = torch.relu(teacher)
        if self.quantize_teacher:
            teacher = self.quantizer(teacher)
        if self.quantize_student:
            student = self.quantizer(student)
        return teacher, student

    def loss_and_matching_ratio(
        self, features: MimicFeatures
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``({"loss_mimic": scalar}, Tensor[N] matching ratio per RoI)``, from one pass over the features:
        lambda / (2N) times the sum of squared differences, per element (over C x R x R) or as written.
        Per-level features: each level's sum over its own C_l x R x R; the ratios level by level."""
        parts = [self._sum_and_ratio(level) for level in features.levels()]
        num = sum(len(ratio) for _, ratio in parts)
        total = parts[0][0] if len(parts) == 1 else torch.stack([t for t, _ in parts]).sum()
        loss = self.weight * total / (2 * max(num, 1))
        return {"loss_mimic": loss}, torch.cat([ratio for _, ratio in parts])

    def _sum_and_ratio(self, features: MimicFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """One level's sum of squared differences (divided by C x R x R per element) and its Tensor[N_l]
        matching ratios."""
        teacher, student = self.compared(features)
        num, per_roi = teacher.shape[0], teacher.shape[1:].numel()  # RoIs, elements per RoI
        diff = (teacher - student).reshape(-1).float()  # half precision (AMP) would overflow the sum
        total = torch.dot(diff, diff)  # the sum of squares in one pass
        if self.normalize == "per_element":
            total = total / per_roi
        with torch.no_grad():  # sign(min(|diff| - threshold, 0)) is -1 where matched, else 0
            below = diff.abs().sub_(self.match_threshold).clamp_(max=0).sign_()
            ratio = below.view(num, per_roi).sum(dim=1).div_(-per_roi)  # count_nonzero copies to int64
        return total, ratio

    def forward(self, features: MimicFeatures) -> dict[str, torch.Tensor]:
        return self.loss_and_matching_ratio(features)[0]

    @torch.no_grad()
    def matching_ratio(self, features: MimicFeatures) -> torch.Tensor:
        """Tensor[N]: per RoI, the share of elements with |f_t - f_s| < threshold (paper Fig. 5)."""
        return self.loss_and_matching_ratio(features)[1]
