"""The feature-map quantizer Q of Quantization Mimic (paper Sec. 3.2) and the "quantized ReLU".

Q maps a value to the nearest code of a code book with stride s (a value exactly half-way between two
codes goes to the lower one); values <= s/2 (negatives included) map to 0 and there is no upper clip.
The backward pass is straight-through (the full-precision gradient): the paper reports that a quantized
gradient makes the student fail to converge.
"""

from __future__ import annotations

import torch
from torch import nn

QUANTIZER_TYPES = ("uniform", "pow2")


def _uniform_codes(x: torch.Tensor, stride: float) -> torch.Tensor:
    # nearest code; a value exactly half-way goes to the lower code, so everything <= s/2 is 0.
    # One new tensor, the rest in place: a fresh tensor per operator costs more than the operator.
    if stride == 1.0:  # the paper's stride: two passes over the tensor fewer, the same values
        return x.sub(0.5).ceil_().clamp_(min=0)
    return x.div(stride).sub_(0.5).ceil_().clamp_(min=0).mul_(stride)


def _pow2_codes(x: torch.Tensor, stride: float) -> torch.Tensor:
    # code book {0, s, 2s, 4s, 8s, ...}: between s*2^k and s*2^(k+1) the nearer one, ties upwards
    ratio = (x / stride).clamp(min=1.0)
    low = torch.exp2(torch.floor(torch.log2(ratio)))
    code = torch.where(ratio - low >= low / 2, 2 * low, low) * stride
    return torch.where(x > stride / 2, code, torch.zeros_like(x))


def quantize(x: torch.Tensor, stride: float = 1.0, kind: str = "uniform") -> torch.Tensor:
    """Q(x) for a tensor of any shape; gradient straight-through (dQ/dx = 1 everywhere)."""
    if kind not in QUANTIZER_TYPES:
        raise ValueError(f"Unknown quantizer type {kind!r}: use one of {QUANTIZER_TYPES}.")
    if stride <= 0:
        raise ValueError(f"Quantizer stride must be positive, got {stride}.")
    if not x.requires_grad:
        return _codes(x, stride, kind)
    return _StraightThrough.apply(x, stride, kind)


def _codes(x: torch.Tensor, stride: float, kind: str) -> torch.Tensor:
    with torch.no_grad():
        return _uniform_codes(x, stride) if kind == "uniform" else _pow2_codes(x, stride)


class _StraightThrough(torch.autograd.Function):
    """Forward: the codes; backward: the incoming gradient unchanged. One tensor, where the usual
    ``x + (codes - x).detach()`` costs two more passes (and rounds the codes by an ulp)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, stride: float, kind: str) -> torch.Tensor:
        return _codes(x, stride, kind)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None


class Quantizer(nn.Module):
    """``quantize`` as a module: ``Tensor[*] -> Tensor[*]`` (same shape, values on the code book)."""

    def __init__(self, stride: float = 1.0, kind: str = "uniform"):
        super().__init__()
        quantize(torch.zeros(1), stride, kind)  # validates the arguments once
        self.stride = float(stride)
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize(x, self.stride, self.kind)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, stride={self.stride}"


class QuantizedReLU(Quantizer):
    """Q(ReLU(x)): the paper's replacement for the last activation of a feature extractor.

    Same values as Q (Q already maps negatives to 0), but the gradient is ReLU's (0 for x < 0),
    i.e. the full-precision activation's gradient.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize(torch.relu(x), self.stride, self.kind)


def quantize_outputs(module: nn.Module, quantizer: nn.Module) -> nn.Module:
    """Apply ``quantizer`` to every tensor of ``module``'s dict output, in place, with a forward hook.

    The quantizer holds no parameters or buffers, so the module's state dict (and therefore loading
    full-precision weights into it, as the paper's teacher fine-tuning does) is unchanged.
    """
    module.output_quantizer = quantizer

    def hook(mod: nn.Module, inputs, outputs: dict) -> dict:
        return {name: mod.output_quantizer(x) for name, x in outputs.items()}

    module.register_forward_hook(hook)
    return module


PLACEMENTS = ("outputs", "bottom_up")


def quantized_part(cfg, backbone: nn.Module) -> nn.Module:
    """The module whose outputs MODEL.QUANTIZER.PLACEMENT quantizes: ``backbone`` itself ("outputs":
    an FPN's outputs, a single-level backbone's map) or an FPN's bottom-up network ("bottom_up": its
    stage outputs res2..res5, post-ReLU, which the FPN's lateral convs read)."""
    placement = cfg.MODEL.QUANTIZER.PLACEMENT
    if placement not in PLACEMENTS:
        raise ValueError(f"Unknown MODEL.QUANTIZER.PLACEMENT {placement!r}: use one of {PLACEMENTS}.")
    if placement == "outputs":
        return backbone
    if not isinstance(getattr(backbone, "bottom_up", None), nn.Module):
        raise ValueError(
            f'MODEL.QUANTIZER.PLACEMENT "bottom_up" needs an FPN backbone, not {type(backbone).__name__}: '
            'use "outputs".'
        )
    return backbone.bottom_up


def maybe_quantize_outputs(cfg, backbone: nn.Module) -> nn.Module:
    """``backbone`` with the quantized ReLU on the outputs of :func:`quantized_part` if
    ``cfg.MODEL.QUANTIZER.ENABLED``."""
    qcfg = cfg.MODEL.get("QUANTIZER", None)
    if qcfg is None or not qcfg.ENABLED:
        return backbone
    quantize_outputs(quantized_part(cfg, backbone), QuantizedReLU(qcfg.STRIDE, qcfg.TYPE))
    return backbone
