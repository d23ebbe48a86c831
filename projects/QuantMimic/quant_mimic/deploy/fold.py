"""Fold batch norm into the convolution before it, for inference.

An eval-mode ``BatchNorm2d`` (or detectron2's ``FrozenBatchNorm2d``) after a conv is the affine map
``y = (x - mean) / sqrt(var + eps) * gamma + beta``; folding it gives one conv with
``W' = W * gamma / sqrt(var + eps)`` (per output channel) and ``b' = (b - mean) * gamma / sqrt(var + eps)
+ beta``: the same outputs (to float rounding) for one conv's cost.
"""

from __future__ import annotations

import copy

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn

FOLDABLE_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _norm_scale_shift(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)``, Tensor[C] each, with ``norm(x) == x * scale + shift`` per channel."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return scale, norm.bias - norm.running_mean * scale


@torch.no_grad()
def fold_conv_norm(conv: Conv2d) -> bool:
    """Fold ``conv.norm`` into ``conv``'s weight and bias, in place, and drop the norm.

    Returns whether it folded (a conv without a foldable norm, e.g. GroupNorm, is left as it is).
    """
    norm = getattr(conv, "norm", None)
    if not isinstance(norm, FOLDABLE_NORMS):
        return False
    scale, shift = _norm_scale_shift(norm)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    bias = shift if conv.bias is None else conv.bias * scale + shift
    conv.bias = nn.Parameter(bias)
    conv.norm = None
    return True


def fold_batch_norm(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, int]:
    """Fold every detectron2 ``Conv2d``'s batch norm (``conv.norm``) into the conv.

    Args:
        model: an eval-mode model (its norms' running statistics are what gets folded).
        inplace: change ``model`` itself instead of a deep copy.

    Returns:
        ``(model, count)``: the folded model and how many norms were folded.
    """
    if model.training:
        raise ValueError("fold_batch_norm needs an eval-mode model: call model.eval() first.")
    if not inplace:
        model = copy.deepcopy(model)
    count = sum(fold_conv_norm(m) for m in model.modules() if isinstance(m, Conv2d))
    return model, count
