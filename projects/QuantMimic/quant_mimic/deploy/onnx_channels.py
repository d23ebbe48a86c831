"""Narrow convolutions padded with zero channels, for ONNX Runtime's blocked CPU layout.

ONNX Runtime runs convolutions in its NCHWc layout (channels in blocks of 16 with AVX-512, 8 with AVX2)
only where a conv's channel counts are multiples of the block; the others run in plain NCHW, with a
layout conversion on each side. A 1/16-width ResNet has 4- and 8-channel stages, so its early layers
go back and forth. :func:`pad_narrow_channels` rewrites the graph so that those tensors carry zero
channels up to the block: the padded output channels of a conv have zero weights and zero bias, so after
ReLU, max pooling, addition or nearest upsampling they stay exactly zero, and the next conv gives them
zero input weights. The results are the same up to float summation order.

Only a group of tensors that is made by convs and read by convs (through those channel-blind operators)
is padded; a tensor that reaches anything else (a reshape, ROIAlign, a graph output) keeps its width.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# operators whose output channel c is a function of channel c of their feature inputs alone (and that map
# zero channels to zero): the positions of the feature inputs in each
CHANNEL_BLIND = {"Relu": (0,), "MaxPool": (0,), "Add": (0, 1), "Resize": (0,), "Upsample": (0,)}


def nchwc_block(cpuinfo: str = "/proc/cpuinfo") -> int | None:
    """The channel block of ONNX Runtime's NCHWc layout on this CPU (its MLAS library: 16 with AVX-512,
    8 with AVX2), or None where it cannot be told (no ``cpuinfo``: not Linux) or there is none."""
    try:
        flags = Path(cpuinfo).read_text().split()
    except OSError:
        return None
    return 16 if "avx512f" in flags else 8 if "avx2" in flags else None


def pad_narrow_channels(model: bytes, block: int) -> bytes:
    """``model`` (a serialized ONNX model) with every paddable group of tensors whose channel count is
    not a multiple of ``block`` widened to the next multiple (see the module's docstring); the model
    unchanged when nothing can be padded."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(model)
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[tuple]] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, position))

    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for node in graph.node:  # the tensors a channel-blind operator ties together share one width
        if node.op_type in CHANNEL_BLIND:
            for position in CHANNEL_BLIND[node.op_type]:
                if position < len(node.input) and node.input[position] not in initializers:
                    parent[find(node.input[position])] = find(node.output[0])

    def conv_weight(node) -> np.ndarray | None:
        if node.op_type != "Conv" or len(node.input) < 2 or _attribute(node, "group", 1) != 1:
            return None
        if any(name not in initializers for name in node.input[1:]):  # weights made by other nodes
            return None
        return numpy_helper.to_array(initializers[node.input[1]])

    groups: dict[str, dict] = {}
    for name in set(producers) | {x for node in graph.node for x in node.input}:
        groups.setdefault(find(name), {"tensors": [], "ok": True, "channels": set()})["tensors"].append(name)
    outputs = {o.name for o in graph.output} | {i.name for i in graph.input}
    for group in groups.values():
        for name in group["tensors"]:
            node = producers.get(name)
            if name in outputs or node is None:
                group["ok"] = False  # a graph input or output, or an initializer
                continue
            if node.op_type == "Conv":
                weight = conv_weight(node)
                if weight is None:
                    group["ok"] = False
                else:
                    group["channels"].add(weight.shape[0])
            elif node.op_type not in CHANNEL_BLIND:
                group["ok"] = False
            for reader, position in consumers.get(name, []):
                if reader.op_type == "Conv" and position == 0 and conv_weight(reader) is not None:
                    continue
                if reader.op_type in CHANNEL_BLIND and position in CHANNEL_BLIND[reader.op_type]:
                    continue
                group["ok"] = False
        if len(group["channels"]) != 1 or next(iter(group["channels"])) % block == 0:
            group["ok"] = False

    widen_out: dict[int, int] = {}  # id(conv node) -> padded output channels
    widen_in: dict[int, int] = {}  # id(conv node) -> padded input channels
    for group in groups.values():
        if not group["ok"]:
            continue
        (channels,) = group["channels"]
        padded = -(-channels // block) * block
        for name in group["tensors"]:
            if producers[name].op_type == "Conv":
                widen_out[id(producers[name])] = padded
            for reader, _ in consumers.get(name, []):
                if reader.op_type == "Conv":
                    widen_in[id(reader)] = padded
    if not widen_out:
        return model
    uses = {}
    for node in graph.node:
        for name in node.input[1:]:
            uses[name] = uses.get(name, 0) + 1
    for node in graph.node:
        if id(node) not in widen_out and id(node) not in widen_in:
            continue
        if any(uses[name] > 1 for name in node.input[1:]):
            return model  # a weight shared by two convs: leave the model alone
        weight = conv_weight(node)
        out_channels = widen_out.get(id(node), weight.shape[0])
        in_channels = widen_in.get(id(node), weight.shape[1])
        wide = np.zeros((out_channels, in_channels, *weight.shape[2:]), weight.dtype)
        wide[: weight.shape[0], : weight.shape[1]] = weight
        initializers[node.input[1]].CopyFrom(numpy_helper.from_array(wide, node.input[1]))
        if len(node.input) > 2:
            bias = numpy_helper.to_array(initializers[node.input[2]])
            wide_bias = np.zeros(out_channels, bias.dtype)
            wide_bias[: bias.shape[0]] = bias
            initializers[node.input[2]].CopyFrom(numpy_helper.from_array(wide_bias, node.input[2]))
    del graph.value_info[:]  # the recorded shapes of the widened tensors are stale
    return proto.SerializeToString()


def _attribute(node, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.i
    return default
