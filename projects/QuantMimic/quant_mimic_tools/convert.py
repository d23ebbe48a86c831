"""Convert a torchvision ImageNet checkpoint into weights for this project's full-width backbones.

    python -m quant_mimic_tools.convert --model resnet18|resnet34|resnet50|vgg16 --input resnet18.pth \\
        --output R18.pkl [--grayscale] [--config-file configs/voc/teacher_R18_FPN.yaml]

Then train with ``MODEL.WEIGHTS R18.pkl``. The output holds ``{"model": {name: array}, "__author__":
"torchvision", "matching_heuristics": True}`` (``.pkl``: numpy arrays, ``.pth``: tensors). Names are the
backbone's own (``stem.conv1.weight``, ``res2.0.conv1.norm.running_mean``, ``conv1_1.weight``);
detectron2's ``DetectionCheckpointer`` matches them by suffix to ``backbone.`` (single map) or
``backbone.bottom_up.`` (FPN) and leaves the detection heads at their initialisation. torchvision's
``fc`` / ``classifier`` layers are dropped.

Matching configs: ResNets need ``MODEL.RESNETS.NORM`` "BN" / "FrozenBN" / "SyncBN" and, for resnet50,
``STRIDE_IN_1X1 False`` (torchvision strides the 3x3 conv); ``vgg16`` needs ``MODEL.VGG.NORM ""``. Both
need width divisor 1 (ImageNet weights exist only for full-width networks) and torchvision's input
normalisation: ``INPUT.FORMAT "RGB"``, ``PIXEL_MEAN [123.675, 116.28, 103.53]``, ``PIXEL_STD [58.395,
57.12, 57.375]``. ``--grayscale`` sums the first conv over its RGB inputs, for ``INPUT.FORMAT "L"`` with one
mean and std (e.g. [117.04] and [57.53], the luma of the values above). ``--config-file`` checks a target
config against these before writing.
"""

from __future__ import annotations

import argparse
import pickle
import re
import sys
from typing import Dict, Iterator, Tuple

import torch

from quant_mimic.config import build_config
from quant_mimic.errors import QuantMimicInputError
from quant_mimic.modeling.backbone.vgg import VGG16_STAGES

# torchvision ResNet depth of each model name; its stages layer1..layer4 are detectron2's res2..res5.
RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50}
MODELS = (*RESNET_DEPTHS, "vgg16")
# torchvision's classification layers, which no detection backbone has.
CLASSIFIER_PREFIXES = ("fc.", "classifier.")
# Norms whose parameters and running statistics a torchvision BatchNorm maps onto.
BN_NORMS = ("BN", "FrozenBN", "SyncBN")
# Layers a torchvision VGG ``features`` entry takes per conv (conv + ReLU); each stage ends with a pool.
VGG_LAYERS_PER_CONV = 2
VGG_POOL_LAYERS = 1

_RESNET_PATTERNS = [
    (re.compile(r"^conv1\.weight$"), lambda m: "stem.conv1.weight"),
    (re.compile(r"^bn1\.(\w+)$"), lambda m: f"stem.conv1.norm.{m[1]}"),
    (re.compile(r"^layer(\d)\.(\d+)\.conv(\d)\.weight$"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight"),
    (re.compile(r"^layer(\d)\.(\d+)\.bn(\d)\.(\w+)$"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.0\.weight$"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.1\.(\w+)$"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}"),
]  # fmt: skip


def vgg16_feature_names() -> Dict[int, str]:
    """torchvision ``vgg16.features`` index of every conv -> this project's conv name (0 -> conv1_1, ...)."""
    names, index = {}, 0
    for stage, (num_convs, _) in enumerate(VGG16_STAGES):
        for j in range(num_convs):
            names[index] = f"conv{stage + 1}_{j + 1}"
            index += VGG_LAYERS_PER_CONV
        index += VGG_POOL_LAYERS
    return names


def _renamed(model: str, state_dict: Dict[str, torch.Tensor]) -> Iterator[Tuple[str, torch.Tensor]]:
    vgg_names = vgg16_feature_names()
    for key, value in state_dict.items():
        if key.startswith(CLASSIFIER_PREFIXES):
            continue
        new = None
        if model == "vgg16":
            m = re.match(r"^features\.(\d+)\.(weight|bias)$", key)
            if m and int(m[1]) in vgg_names:
                new = f"{vgg_names[int(m[1])]}.{m[2]}"
        else:
            new = next((fn(m) for pattern, fn in _RESNET_PATTERNS if (m := pattern.match(key))), None)
        if new is None:
            raise QuantMimicInputError(
                f"Checkpoint key {key!r} is not a torchvision {model} key: pass the matching --model "
                f"({', '.join(MODELS)}; vgg16_bn is not supported)."
            )
        yield new, value


def convert(
    model: str, state_dict: Dict[str, torch.Tensor], grayscale: bool = False
) -> Dict[str, torch.Tensor]:
    """torchvision ``state_dict`` of ``model`` -> {backbone parameter name: tensor} (see the module doc).

    ``grayscale``: the first conv's ``Tensor[C, 3, k, k]`` becomes its sum over inputs, ``Tensor[C, 1, k, k]``.
    """
    if model not in MODELS:
        raise QuantMimicInputError(f"--model {model!r} is not supported: use one of {', '.join(MODELS)}.")
    converted = dict(_renamed(model, state_dict))
    first = "conv1_1.weight" if model == "vgg16" else "stem.conv1.weight"
    if first not in converted:
        raise QuantMimicInputError(
            f"The checkpoint has no first conv ({first}): it is not a torchvision {model}."
        )
    if grayscale:
        converted[first] = converted[first].sum(dim=1, keepdim=True)
    return converted


def check_target_config(model: str, config_file: str) -> None:
    """Refuse, with one sentence, a target config the converted weights cannot initialise."""
    cfg = build_config(config_file)
    backbone = cfg.MODEL.BACKBONE.NAME
    if model == "vgg16":
        divisor, family, norm_ok = cfg.MODEL.VGG.WIDTH_DIVISOR, "vgg", cfg.MODEL.VGG.NORM == ""
        norm_hint = 'MODEL.VGG.NORM "" (torchvision vgg16 has no norm layers)'
    else:
        divisor, family, norm_ok = (
            cfg.MODEL.RESNETS.WIDTH_DIVISOR,
            "resnet",
            cfg.MODEL.RESNETS.NORM in BN_NORMS,
        )
        norm_hint = f"MODEL.RESNETS.NORM in {BN_NORMS}"
    if family not in backbone:
        raise QuantMimicInputError(
            f"{config_file} builds {backbone}, not a {model} backbone: pick a matching --model."
        )
    if divisor != 1:
        raise QuantMimicInputError(
            f"{config_file} has width divisor {divisor}, but ImageNet weights exist only for full-width "
            "networks: convert for a width-1 teacher and train tiny students from scratch or by mimic."
        )
    if not norm_ok:
        raise QuantMimicInputError(f"{config_file} cannot take torchvision {model} weights: set {norm_hint}.")
    if model in RESNET_DEPTHS:
        if cfg.MODEL.RESNETS.DEPTH != RESNET_DEPTHS[model]:
            raise QuantMimicInputError(
                f"{config_file} has MODEL.RESNETS.DEPTH {cfg.MODEL.RESNETS.DEPTH}: use --model resnet"
                f"{cfg.MODEL.RESNETS.DEPTH} or a depth-{RESNET_DEPTHS[model]} config."
            )
        if model == "resnet50" and cfg.MODEL.RESNETS.STRIDE_IN_1X1:
            raise QuantMimicInputError(
                f"{config_file} strides the 1x1 conv, torchvision's resnet50 the 3x3: set MODEL.RESNETS.STRIDE_IN_1X1 False."
            )


def load_torchvision(path: str) -> Dict[str, torch.Tensor]:
    """A torchvision state dict from ``path`` (bare, or under "state_dict" / "model")."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    return data


def save(converted: Dict[str, torch.Tensor], path: str) -> None:
    """Write ``{"model", "__author__", "matching_heuristics"}`` as .pkl (numpy) or .pth (tensors)."""
    if path.endswith(".pkl"):
        model = {k: v.detach().cpu().numpy() for k, v in converted.items()}
        with open(path, "wb") as f:
            pickle.dump({"model": model, "__author__": "torchvision", "matching_heuristics": True}, f)
    elif path.endswith(".pth"):
        torch.save({"model": converted, "__author__": "torchvision", "matching_heuristics": True}, path)
    else:
        raise QuantMimicInputError(f"--output {path} must end in .pkl or .pth.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--input", required=True, help="torchvision state dict (.pth)")
    parser.add_argument("--output", required=True, help="output file, .pkl or .pth")
    parser.add_argument(
        "--grayscale", action="store_true", help="sum the first conv over RGB (INPUT.FORMAT L)"
    )
    parser.add_argument("--config-file", default="", help="check that this config can take the weights")
    args = parser.parse_args(argv)
    try:
        if args.config_file:
            check_target_config(args.model, args.config_file)
        converted = convert(args.model, load_torchvision(args.input), args.grayscale)
        save(converted, args.output)
    except QuantMimicInputError as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 2
    print(f"Wrote {len(converted)} tensors of torchvision {args.model} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
