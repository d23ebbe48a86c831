"""Where the mimic loss enters the total loss: the model the trainer's step calls.

detectron2's own step (``SimpleTrainer.run_step``, or ``AMPTrainer.run_step`` with SOLVER.AMP.ENABLED)
runs unchanged, with its hooks (``after_backward`` where detectron2 has it), metrics and AMP; it calls
``WithMimicLoss(model)`` instead of the model. In training that returns the model's detection losses
plus ``loss_mimic`` = lambda * L_m computed from the ``MimicFeatures`` the ``QuantMimicRCNN`` hands over,
and logs the paper's matching ratio as ``mimic/matching_ratio``; in inference it is the model itself.
The checkpointer keeps the model without this wrapper, so checkpoints are unchanged.
"""

from __future__ import annotations

from detectron2.utils.events import get_event_storage
from torch import nn

from ..modeling.meta_arch import MIMIC_FEATURES_KEY
from ..modeling.mimic_loss import MimicLoss


class WithMimicLoss(nn.Module):
    """``forward(batched_inputs)``: training, ``{**detection losses, "loss_mimic": Tensor[]}``;
    inference, the wrapped model's outputs."""

    def __init__(self, module: nn.Module, mimic_loss: MimicLoss):
        super().__init__()
        self.module = module  # the QuantMimicRCNN, or DistributedDataParallel around it
        self.mimic_loss = mimic_loss

    def forward(self, batched_inputs: list[dict]):
        outputs = self.module(batched_inputs)
        if not self.training:
            return outputs
        features = outputs.pop(MIMIC_FEATURES_KEY)
        losses, matching_ratio = self.mimic_loss.loss_and_matching_ratio(features)
        outputs.update(losses)
        get_event_storage().put_scalar("mimic/matching_ratio", matching_ratio.mean().item())
        return outputs
