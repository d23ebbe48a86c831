"""The quantizer Q: values on a table of inputs, straight-through gradient, the power-of-2 variant."""

import pytest
import torch
from conftest import CONFIGS

from quant_mimic.config import build_config
from quant_mimic.modeling.quantizer import (
    QuantizedReLU,
    Quantizer,
    maybe_quantize_outputs,
    quantize,
    quantize_outputs,
)


@pytest.mark.parametrize(
    "x, s, expected",
    [
        (-3.0, 1.0, 0.0),    # negatives -> 0
        (0.0, 1.0, 0.0),
        (0.5, 1.0, 0.0),     # <= s/2 -> 0
        (0.51, 1.0, 1.0),
        (1.49, 1.0, 1.0),
        (1.5, 1.0, 1.0),     # half-way goes to the lower code
        (2.4, 1.0, 2.0),
        (1000.3, 1.0, 1000.0),  # no upper clip
        (0.3, 0.25, 0.25),
        (0.12, 0.25, 0.0),
        (0.9, 0.25, 1.0),
    ],
)  # fmt: skip
def test_uniform_quantizer_table(x, s, expected):
    assert quantize(torch.tensor([x]), s).item() == pytest.approx(expected)


@pytest.mark.parametrize(
    "x, expected",
    [(-1.0, 0.0), (0.4, 0.0), (0.6, 1.0), (1.4, 1.0), (1.5, 2.0), (2.9, 2.0), (3.0, 4.0), (5.9, 4.0), (6.0, 8.0),
     (100.0, 128.0), (95.0, 64.0)],
)  # fmt: skip
def test_power_of_two_codes(x, expected):
    assert quantize(torch.tensor([x]), 1.0, "pow2").item() == pytest.approx(expected)


@pytest.mark.parametrize(
    "x, s, expected",
    [(1.0, 2.0, 0.0),     # s/2 -> 0
     (1.01, 2.0, 2.0), (2.9, 2.0, 2.0), (3.0, 2.0, 4.0), (5.9, 2.0, 4.0), (6.0, 2.0, 8.0),
     (0.25, 0.5, 0.0), (0.3, 0.5, 0.5), (0.75, 0.5, 1.0), (1.4, 0.5, 1.0), (1.5, 0.5, 2.0), (3.0, 0.5, 4.0)],
)  # fmt: skip
def test_power_of_two_codes_scale_with_the_stride(x, s, expected):
    # code book {0, s, 2s, 4s, ...}: x/s is rounded to a power of two (ties upwards), then times s
    assert quantize(torch.tensor([x]), s, "pow2").item() == pytest.approx(expected)


def test_defaults_are_the_papers_quantizer():
    x = torch.tensor([0.5, 0.6, 1.5, 2.6, 3.0])
    assert torch.equal(quantize(x), torch.tensor([0.0, 1.0, 1.0, 3.0, 3.0]))  # uniform, s = 1
    q = Quantizer()
    assert (q.kind, q.stride) == ("uniform", 1.0) and torch.equal(q(x), quantize(x, 1.0))


@pytest.mark.parametrize("module", [Quantizer, QuantizedReLU])
def test_modules_use_their_kind_and_stride(module):
    x = torch.tensor([-1.0, 0.4, 1.1, 2.9, 3.1, 5.2])
    assert torch.equal(module(1.0, "pow2")(x), torch.tensor([0.0, 0.0, 1.0, 2.0, 4.0, 4.0]))
    assert torch.equal(module(2.0, "uniform")(x), torch.tensor([0.0, 0.0, 2.0, 2.0, 4.0, 6.0]))


def test_pow2_outputs_are_zero_or_powers_of_two():
    q = quantize(torch.linspace(-5, 300, 2001), 1.0, "pow2")
    nonzero = q[q > 0]
    assert torch.equal(torch.exp2(torch.log2(nonzero).round()), nonzero)


def test_gradient_is_straight_through():
    x = torch.tensor([-2.0, 0.2, 0.7, 3.3, 1000.0], requires_grad=True)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    (quantize(x, 1.0) * weights).sum().backward()
    assert torch.equal(x.grad, weights)  # identity: dQ/dx = 1 everywhere


def test_quantized_relu_has_relu_gradient_and_q_values():
    x = torch.tensor([-2.0, 0.2, 0.7, 3.3], requires_grad=True)
    y = QuantizedReLU(1.0)(x)
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.0, 1.0, 3.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0]))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="Unknown quantizer type"):
        Quantizer(1.0, "log")
    with pytest.raises(ValueError, match="stride must be positive"):
        Quantizer(0.0)


def test_quantize_outputs_keeps_the_state_dict_and_quantizes_every_output():
    class TwoOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 1)

        def forward(self, x):
            return {"a": self.conv(x), "b": -self.conv(x)}

    model = TwoOutputs()
    keys = set(model.state_dict())
    quantize_outputs(model, QuantizedReLU(0.5))
    assert set(model.state_dict()) == keys
    out = model(torch.randn(1, 1, 4, 4) * 3)
    for t in out.values():
        assert torch.all(t >= 0) and torch.equal(t, (t / 0.5).round() * 0.5)


def tiny_backbone_cfg(*opts):
    cfg = build_config(str(CONFIGS / "shapes" / "student_R18_16_FPN_scratch.yaml"), list(opts))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def test_maybe_quantize_outputs_follows_model_quantizer():
    from detectron2.modeling import build_backbone

    torch.manual_seed(0)
    image = torch.randn(1, 3, 64, 64) * 50
    off = tiny_backbone_cfg()
    plain = build_backbone(off)
    assert maybe_quantize_outputs(off, plain) is plain and not hasattr(plain, "output_quantizer")
    assert any(not torch.equal(f, f.round()) for f in plain(image).values())  # full precision

    on = tiny_backbone_cfg("MODEL.QUANTIZER.ENABLED", "True", "MODEL.QUANTIZER.TYPE", "pow2",
                           "MODEL.QUANTIZER.STRIDE", "0.5")  # fmt: skip
    backbone = maybe_quantize_outputs(on, build_backbone(off))
    q = backbone.output_quantizer
    assert isinstance(q, QuantizedReLU) and (q.kind, q.stride) == ("pow2", 0.5)
    codes = torch.cat([f.flatten() for f in backbone(image).values()])
    nonzero = codes[codes > 0] / 0.5
    assert (
        codes.min() >= 0
        and len(nonzero) > 0
        and torch.equal(torch.exp2(torch.log2(nonzero).round()), nonzero)
    )
