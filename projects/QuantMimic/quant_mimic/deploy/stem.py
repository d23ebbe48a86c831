"""A very narrow ResNet stem computed as four output phases, for ONNX Runtime's CPU convolutions.

detectron2's ``BasicStem`` is ``max_pool2d(relu(conv7x7_stride2(x)), 3, stride=2, padding=1)``. ONNX
Runtime's CPU convs run in a blocked layout of 16 output channels (NCHWc, on AVX-512), so the 1/16-width
student's 4-channel stem pays for 16 channels: three quarters of its largest conv is padding (measured:
about 2 ms of an 11 ms 600 px detection on 2 cores).

:class:`PhaseSplitStem` computes the same stem with 4x the output channels at half the resolution: output
pixel ``(2i + a, 2j + b)`` of the stride-2 conv is channel ``(a, b, c)`` of a stride-4 9x9 conv (the 7x7
kernel shifted by ``(2a, 2b)`` inside the 9x9 one). Those 16 channels fill the block. The 3x3 stride-2
max pool then reads the phases directly: its window around ``(2i, 2j)`` is phase (0, 0) at ``(i, j)``,
phase (0, 1) at ``(i, j)`` and ``(i, j - 1)``, phase (1, 0) at ``(i, j)`` and ``(i - 1, j)``, and phase
(1, 1) at those four. The result is the stem's, to float rounding (the same products, summed in another
order); padding with 0 where the pool pads with -inf is exact after the ReLU (every window holds at least
one value >= 0).

Used by the export where it pays: a stem of at most 4 channels (its 16 phase channels are one block), on
inputs whose sides are multiples of 4 (the FPN's size divisibility of 32 guarantees it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.modeling.backbone.resnet import BasicStem
from torch import nn

# a stem with at most this many channels is split: its 4 phases fill one 16-channel block
MAX_SPLIT_CHANNELS = 4


class PhaseSplitStem(nn.Module):
    """``BasicStem``'s forward (conv already folded with its norm), computed as 4 output phases."""

    def __init__(self, stem: BasicStem):
        super().__init__()
        conv = stem.conv1
        if conv.norm is not None or conv.activation is not None:
            raise ValueError(
                "PhaseSplitStem needs a stem whose conv has its norm folded in (fold_batch_norm)."
            )
        weight = conv.weight.detach()
        out_channels, in_channels = weight.shape[:2]
        split = weight.new_zeros(2, 2, out_channels, in_channels, 9, 9)
        for a in range(2):
            for b in range(2):
                split[a, b, :, :, 2 * a : 2 * a + 7, 2 * b : 2 * b + 7] = weight
        bias = conv.bias.detach() if conv.bias is not None else weight.new_zeros(out_channels)
        self.register_buffer("weight", split.flatten(0, 2))  # channel (a * 2 + b) * C + c
        self.register_buffer("bias", bias.repeat(4))
        self.out_channels = out_channels
        self.stride = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.conv2d(x, self.weight, self.bias, stride=4, padding=3))
        p00, p01, p10, p11 = y.split(self.out_channels, dim=1)  # one Split: no shape arithmetic
        out = torch.maximum(torch.maximum(p00, p01), torch.maximum(p10, p11))
        out = torch.maximum(out, F.max_pool2d(F.pad(p11, (1, 0, 1, 0)), 2, 1))  # rows/cols i-1
        out = torch.maximum(out, F.max_pool2d(F.pad(p01, (1, 0, 0, 0)), (1, 2), 1))  # col j-1
        return torch.maximum(out, F.max_pool2d(F.pad(p10, (0, 0, 1, 0)), (2, 1), 1))  # row i-1


def is_basic_stem(module: nn.Module) -> bool:
    """Whether ``module`` is detectron2's ``BasicStem`` with its standard conv and pool."""
    if type(module) is not BasicStem:
        return False
    conv = module.conv1
    return (
        conv.kernel_size == (7, 7) and conv.stride == (2, 2) and conv.padding == (3, 3) and conv.groups == 1
    )


def split_narrow_stems(backbone: nn.Module, size_divisibility: int) -> int:
    """Replace, in place, each ``BasicStem`` of ``backbone`` with at most ``MAX_SPLIT_CHANNELS`` channels
    by its :class:`PhaseSplitStem` (norms must be folded first). Nothing is replaced unless every input
    side is a multiple of 4 (``size_divisibility``). Returns how many stems were replaced."""
    if size_divisibility <= 0 or size_divisibility % 4:
        return 0
    targets = [
        (parent, name, child)
        for parent in backbone.modules()
        for name, child in parent.named_children()
        if is_basic_stem(child) and child.conv1.out_channels <= MAX_SPLIT_CHANNELS
    ]
    for parent, name, child in targets:
        setattr(parent, name, PhaseSplitStem(child))
    return len(targets)
