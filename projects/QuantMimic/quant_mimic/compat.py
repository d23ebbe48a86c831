"""Every compatibility shim between detectron2 0.6 (the PyPI build used here) and upstream main.

Keep this module small: anything that differs between the two versions, or that neither handles on a
CPU-only machine, goes here, named for what it papers over, and nowhere else.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def cpu_capable_ddp() -> Iterator[None]:
    """Within the block, ``DefaultTrainer.__init__`` can wrap a CPU model in DistributedDataParallel.

    Both 0.6 and upstream ``create_ddp_model`` pass ``device_ids=[local_rank]``, which
    DistributedDataParallel rejects for a CPU module (GLOO processes); there it must be ``None``.
    """
    from detectron2.engine import defaults

    original = defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        if not torch.cuda.is_available():
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        defaults.create_ddp_model = original


def feed_batches(trainer, batches) -> None:
    """Make ``trainer`` (a SimpleTrainer) draw its training batches from the iterable ``batches``.

    detectron2 0.6 takes the iterator of its data loader once, in ``__init__`` (``_data_loader_iter``);
    upstream creates it from ``data_loader`` at the first step. Set both.
    """
    trainer.data_loader = batches
    if "_data_loader_iter" in vars(trainer):  # 0.6
        trainer._data_loader_iter = iter(batches)
    elif hasattr(trainer, "_data_loader_iter_obj"):  # upstream
        trainer._data_loader_iter_obj = None


class OptimizerStateInCheckpoints:
    """DefaultTrainer mixin: checkpoints hold the optimizer's state (SGD momentum, learning rates) and
    ``--resume`` restores it.

    Upstream DefaultTrainer saves ``self._trainer.state_dict()`` (which holds the optimizer's) under
    ``_trainer`` and loads it back; 0.6's saves only the iteration and the hooks, so a resumed run
    started again with no momentum and the warm-up learning rate. Under upstream this does the same
    thing a second time.
    """

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])


def forward_after_backward(trainer) -> None:
    """Hooks registered on a DefaultTrainer get ``after_backward`` where detectron2 has that hook point
    (upstream): the inner SimpleTrainer's step calls it on its own hook list, which is empty, so
    upstream DefaultTrainer hooks never see it. 0.6 has no such hook point: nothing to do."""
    if hasattr(trainer, "after_backward"):
        trainer._trainer.after_backward = trainer.after_backward
