"""Narrow convolutions padded to ONNX Runtime's channel block (quant_mimic.deploy.onnx_channels): the same
outputs, only conv-to-conv tensors widened, the model untouched where nothing can be padded."""

import io

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional as F

from quant_mimic.deploy.onnx_channels import nchwc_block, pad_narrow_channels


class TinyNet(nn.Module):
    """A 1/16-width ResNet's shapes: a 3->4 stem, max pooling, a 4-channel residual block, an upsampled
    8-channel branch added into a 16-channel one, and a 4->3 conv whose output is reshaped (an RPN head)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 7, stride=2, padding=3)
        self.conv1, self.conv2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.lateral_fine, self.lateral_coarse = nn.Conv2d(4, 16, 1), nn.Conv2d(8, 16, 1)
        self.head = nn.Conv2d(4, 3, 1)
        for p in self.parameters():  # biases too: padded channels must stay exactly zero regardless
            nn.init.normal_(p, std=0.5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem(x)), 3, stride=2, padding=1)
        x = F.relu(x + self.conv2(F.relu(self.conv1(x))))
        coarse = F.relu(self.down(x))
        fpn = self.lateral_fine(x) + F.interpolate(
            self.lateral_coarse(coarse), scale_factor=2.0, mode="nearest"
        )
        return fpn, self.head(x).reshape(x.shape[0], -1)


def export(model: nn.Module, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(model.eval(), torch.randn(1, 3, size, size), buffer, opset_version=17, dynamo=False)
    return buffer.getvalue()


def run(model: bytes, x: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def conv_shapes(model: bytes) -> dict[str, tuple[int, ...]]:
    graph = onnx.load_from_string(model).graph
    weights = {t.name: numpy_helper.to_array(t).shape for t in graph.initializer}
    return {node.input[1]: weights[node.input[1]] for node in graph.node if node.op_type == "Conv"}


@pytest.mark.parametrize("block", [8, 16])
def test_padding_keeps_every_output_and_widens_only_conv_to_conv_tensors(block):
    torch.manual_seed(0)
    plain = export(TinyNet())
    padded = pad_narrow_channels(plain, block)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    for a, b in zip(run(plain, x), run(padded, x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    before, after = conv_shapes(plain), conv_shapes(padded)
    wide = -(-4 // block) * block
    assert after["stem.weight"] == (wide, 3, 7, 7)  # the image keeps its 3 channels
    assert after["conv1.weight"][:2] == after["conv2.weight"][:2] == (wide, wide)
    assert after["down.weight"][:2] == (max(8, block), wide)
    assert after["lateral_fine.weight"][:2] == (16, wide)
    assert before["head.weight"] == (3, 4, 1, 1) and after["head.weight"] == (3, wide, 1, 1)  # its output
    # is read by a reshape: it keeps its 3 channels


def test_a_model_with_nothing_to_pad_comes_back_unchanged():
    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 4, 1)  # 4 channels, but a graph output

        def forward(self, x):
            return self.b(F.relu(self.a(x)))

    model = export(Wide())
    assert pad_narrow_channels(model, 16) == model


def test_nchwc_block_follows_the_cpu_flags(tmp_path):
    for flags, block in (("fpu avx2 avx512f", 16), ("fpu sse4_2 avx2", 8), ("fpu sse4_2", None)):
        (tmp_path / "cpuinfo").write_text(f"processor : 0\nflags : {flags}\n")
        assert nchwc_block(str(tmp_path / "cpuinfo")) == block
    assert nchwc_block(str(tmp_path / "missing")) is None
