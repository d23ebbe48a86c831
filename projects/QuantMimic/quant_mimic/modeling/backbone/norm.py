"""Widths and normalization layers of the tiny backbones (ResNet, VGG) and of their narrow FPN."""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Union

from detectron2.layers import get_norm
from torch import nn

__all__ = ["GN_MAX_GROUPS", "NormSpec", "norm_spec", "scaled_channels", "tiny_norm"]

# detectron2's "GN" is GroupNorm with 32 groups; tiny layers use the largest divisor of C up to it.
GN_MAX_GROUPS = 32

NormSpec = Union[str, Callable[[int], Optional[nn.Module]]]


def scaled_channels(channels: int, divisor: int) -> int:
    """``channels // divisor``, but never fewer than one channel."""
    if divisor < 1:
        raise ValueError(f"MODEL.RESNETS.WIDTH_DIVISOR must be >= 1, got {divisor}")
    return max(1, channels // divisor)


def tiny_norm(norm: str, channels: int) -> nn.Module | None:
    """Normalization layer ``norm`` for ``channels`` channels (None for ``""``).

    Same as :func:`detectron2.layers.get_norm`, except ``"GN"``: detectron2's GroupNorm has 32
    groups, which a 4-channel layer cannot have, so here it gets ``gcd(32, channels)`` groups
    (32 for any multiple of 32, so full-width layers are unchanged).

    ``"FrozenBN"`` is accepted, but a randomly initialised FrozenBN is a fixed identity-like
    affine map with no statistics to normalize by, and deep from-scratch training with it
    diverges: train tiny models from scratch with ``"BN"``, ``"GN"`` or ``"SyncBN"``, and keep
    FrozenBN for backbones initialised from trained weights.
    """
    if norm == "GN":
        return nn.GroupNorm(math.gcd(GN_MAX_GROUPS, channels), channels)
    return get_norm(norm, channels)


def norm_spec(norm: str) -> NormSpec:
    """What to hand detectron2 blocks as ``norm``: the name itself, or for GN a callable
    ``channels -> module`` built on :func:`tiny_norm` (detectron2 calls ``get_norm(norm, C)``,
    which accepts either). Non-GN names stay strings, because detectron2's FPN decides on
    conv biases by comparing ``norm`` with ``""``."""
    if norm == "GN":
        return functools.partial(tiny_norm, norm)
    return norm
