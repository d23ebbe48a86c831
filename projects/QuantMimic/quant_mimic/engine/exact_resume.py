"""A resumed run that continues exactly as the uninterrupted one would have (on the CPU, where kernels are
deterministic): the same RoI samples and the same batches, in the same order.

Two things a detectron2 checkpoint does not hold make a resumed run differ: the random generators
(torch's draws the RPN's and ROI heads' samples) and the data loader's position (its sampler and the
augmentations' numpy draws start over). :class:`RandomStateHook` saves torch's and Python's generators
with every checkpoint and restores them on ``--resume``; :func:`fast_forward` then draws, and drops,
the batches the interrupted run had already trained on, which replays the sampler and the augmentations'
numpy draws (and puts torch's and Python's restored states back afterwards).

Exact whether the training data is loaded in DataLoader workers or in the training process (0 workers,
the configs' default on the CPU, where the augmentations draw from numpy's global generator): the
trainer's evaluations leave every random state as they found it (:func:`kept_random_states`; a data
loader draws its seed from torch's generator), so that an evaluation the uninterrupted run made at its
checkpoint, and the resumed run does not repeat, shifts no draw.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Iterator

import numpy as np
import torch
from detectron2.engine import HookBase


class RandomStateHook(HookBase):
    """Saves torch's (CPU and CUDA) and Python's random states in each checkpoint; restores them on load."""

    def state_dict(self) -> dict:
        state = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def fast_forward(simple_trainer, batches: int) -> None:
    """Draw and drop ``batches`` batches from ``simple_trainer``'s data loader iterator."""
    if batches <= 0:
        return
    logging.getLogger(__name__).info(
        f"Resuming: skipping the {batches} batches already trained on, so that the data order is the "
        "uninterrupted run's."
    )
    saved = RandomStateHook().state_dict()  # restored from the checkpoint: loading data draws on torch's
    iterator = simple_trainer._data_loader_iter  # 0.6: an attribute; upstream: a property made on first use
    for _ in range(batches):
        next(iterator)
    RandomStateHook().load_state_dict(saved)


@contextlib.contextmanager
def kept_random_states() -> Iterator[None]:
    """Run the block, then put torch's, Python's and numpy's global random states back as they were."""
    saved, numpy_state = RandomStateHook().state_dict(), np.random.get_state()
    try:
        yield
    finally:
        RandomStateHook().load_state_dict(saved)
        np.random.set_state(numpy_state)
