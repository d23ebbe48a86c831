"""The training step of Quantization Mimic: detection losses + lambda * L_m, one optimizer step.

This is where the mimic loss enters the total loss: the model hands over the pooled teacher and
(adapted) student RoI features, this step turns them into ``loss_mimic`` and logs the paper's
matching ratio. The adaptation conv stays inside the (DDP-wrapped) model, so gradient sync is intact.
"""

from __future__ import annotations

import time

from detectron2.engine import SimpleTrainer
from detectron2.utils.events import get_event_storage

from ..modeling.meta_arch import MIMIC_FEATURES_KEY
from ..modeling.mimic_loss import MimicLoss


class MimicStepTrainer(SimpleTrainer):
    """SimpleTrainer whose step adds ``MimicLoss`` to the model's detection losses."""

    def __init__(self, model, data_loader, optimizer, mimic_loss: MimicLoss):
        super().__init__(model, data_loader, optimizer)
        self.mimic_loss = mimic_loss

    def run_step(self) -> None:
        assert self.model.training, "[MimicStepTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        loss_dict = self.model(data)
        features = loss_dict.pop(MIMIC_FEATURES_KEY)
        mimic_losses, matching_ratio = self.mimic_loss.loss_and_matching_ratio(features)
        loss_dict.update(mimic_losses)
        losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        losses.backward()
        self._write_metrics(loss_dict, data_time)
        get_event_storage().put_scalar("mimic/matching_ratio", matching_ratio.mean().item())
        self.optimizer.step()
