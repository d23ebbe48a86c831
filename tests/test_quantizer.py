"""The quantizer Q: values on a table of inputs, straight-through gradient, the power-of-2 variant."""

import pytest
import torch

from quant_mimic.modeling.quantizer import QuantizedReLU, Quantizer, quantize, quantize_outputs


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
