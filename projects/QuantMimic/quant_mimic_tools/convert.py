"""Convert a torchvision ImageNet checkpoint into weights for this project's full-width backbones.

    python -m quant_mimic_tools.convert --model resnet18|resnet34|resnet50|vgg16 --input resnet18.pth \\
        --output R18.pkl [--grayscale] [--config-file configs/voc/teacher_R18_FPN.yaml]
    python -m quant_mimic_tools.convert --model vgg16 --input vgg16.pth --grayscale --select-filters \\
        --config-file configs/wider_face/teacher_VGG4_RFCN.yaml --output output/imagenet/vgg16_gray_1-4.pkl

Then train with ``MODEL.WEIGHTS R18.pkl``. The paper's teacher configs name these files already:
``configs/voc/teacher_R18_FPN.yaml`` reads ``output/imagenet/resnet18.pkl`` (``--model resnet18``) and
``configs/wider_face/teacher_VGG4_RFCN.yaml`` reads ``output/imagenet/vgg16_gray_1-4.pkl`` (the second
command); ``python -m quant_mimic_tools.pipeline --setting voc|wider_face`` checks that they exist. The output holds ``{"model": {name: array}, "__author__":
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

``--select-filters`` (vgg16, with ``--config-file``) initialises a width-divided VGG (the paper's
VGG-1-4 WIDER FACE teacher, ``MODEL.VGG.WIDTH_DIVISOR 4``) from the full VGG-16: every conv keeps the
``C // d`` filters of largest L1 norm (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017)
and, of each kept filter, the input channels the previous conv kept. For a target with a norm after its
convs (``MODEL.VGG.NORM "BN"``) the conv biases are dropped (the norm's shift replaces them) and the norm
starts from its own initialisation. The paper does not say how (or whether) its teachers were
initialised; this is the choice made here.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import sys
from typing import Dict, Iterator, Tuple

import torch

from quant_mimic.config import build_config
from quant_mimic.errors import QuantMimicInputError
from quant_mimic.modeling.backbone.vgg import VGG16_STAGES

from .cli import make_parser, run

# torchvision ResNet depth of each model name; its stages layer1..layer4 are detectron2's res2..res5.
RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50}
MODELS = (*RESNET_DEPTHS, "vgg16")
# torchvision's classification layers, which no detection backbone has.
CLASSIFIER_PREFIXES = ("fc.", "classifier.")
# Norms whose parameters and running statistics a torchvision BatchNorm maps onto.
BN_NORMS = ("BN", "FrozenBN", "SyncBN")
# torchvision's input normalisation (0-255 scale), and its luma for grayscale input.
TORCHVISION_RGB_MEAN = (123.675, 116.28, 103.53)
TORCHVISION_GRAY_MEAN = (117.04,)
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


def select_filters(
    converted: Dict[str, torch.Tensor], width_divisor: int, keep_bias: bool = True
) -> Dict[str, torch.Tensor]:
    """The VGG-16 weights of :func:`convert` narrowed to width ``1 / width_divisor``.

    Every conv (in order ``conv1_1`` .. ``conv5_3``) keeps its ``max(1, C_out // width_divisor)`` output
    filters of largest L1 norm (in their original order), restricted to the input channels the previous
    conv kept: ``Tensor[C_out, C_in, 3, 3] -> Tensor[C_out // d, C_in // d, 3, 3]`` (the first conv keeps
    its image channels). ``keep_bias``: keep the kept filters' biases (False: drop them, for convs
    followed by a norm)."""
    out: Dict[str, torch.Tensor] = {}
    kept_inputs = None
    for name in vgg16_feature_names().values():
        weight = converted[f"{name}.weight"]
        if kept_inputs is not None:
            weight = weight[:, kept_inputs]
        count = max(1, weight.shape[0] // width_divisor)
        kept = torch.sort(torch.topk(weight.abs().sum(dim=(1, 2, 3)), count).indices).values
        out[f"{name}.weight"] = weight[kept].clone()
        if keep_bias and f"{name}.bias" in converted:
            out[f"{name}.bias"] = converted[f"{name}.bias"][kept].clone()
        kept_inputs = kept
    return out


def convert(
    model: str,
    state_dict: Dict[str, torch.Tensor],
    grayscale: bool = False,
    width_divisor: int = 1,
    keep_bias: bool = True,
) -> Dict[str, torch.Tensor]:
    """torchvision ``state_dict`` of ``model`` -> {backbone parameter name: tensor} (see the module doc).

    ``grayscale``: the first conv's ``Tensor[C, 3, k, k]`` becomes its sum over inputs, ``Tensor[C, 1, k, k]``.
    ``width_divisor`` > 1 (vgg16 only): :func:`select_filters`, with ``keep_bias``.
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
    if width_divisor > 1 or not keep_bias:
        if model != "vgg16":
            raise QuantMimicInputError(
                f"Filter selection for a width-divided target is implemented for vgg16 only, not {model}: convert "
                "for a width-1 target."
            )
        converted = select_filters(converted, width_divisor, keep_bias)
    return converted


def check_target_config(model: str, config_file: str, select: bool = False) -> None:
    """Refuse, with one sentence, a target config the converted weights cannot initialise. ``select``:
    the weights are narrowed by :func:`select_filters` (a width-divided VGG with or without a norm)."""
    cfg = build_config(config_file)
    backbone = cfg.MODEL.BACKBONE.NAME
    if select and model != "vgg16":
        raise QuantMimicInputError(
            f"--select-filters is implemented for vgg16 only, not {model}: convert for a width-1 target."
        )
    if model == "vgg16":
        divisor, family, norm_ok = cfg.MODEL.VGG.WIDTH_DIVISOR, "vgg", select or cfg.MODEL.VGG.NORM == ""
        norm_hint = 'MODEL.VGG.NORM "" (torchvision vgg16 has no norm layers), or pass --select-filters'
        if select:
            divisor = 1  # any width: the filters are selected
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
            "networks: convert for a width-1 teacher (vgg16: or pass --select-filters) and train tiny students "
            "from scratch or by mimic."
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


def format_notes(config_file: str, grayscale: bool) -> list[str]:
    """What of the target's input differs from torchvision's (RGB, its mean and std): the weights load, but
    the first conv then sees other values than it was trained on."""
    cfg = build_config(config_file)
    expected = "L" if grayscale else "RGB"
    notes = []
    if cfg.INPUT.FORMAT != expected:
        notes.append(
            f"{config_file} has INPUT.FORMAT {cfg.INPUT.FORMAT}; torchvision's weights expect {expected} "
            f"{'(with --grayscale)' if grayscale else '(or L with --grayscale)'}."
        )
    mean = list(cfg.MODEL.PIXEL_MEAN)
    expected_mean = TORCHVISION_GRAY_MEAN if grayscale else TORCHVISION_RGB_MEAN
    if len(mean) != len(expected_mean) or any(abs(a - b) > 0.01 for a, b in zip(mean, expected_mean)):
        notes.append(f"{config_file} has MODEL.PIXEL_MEAN {mean}, not torchvision's {list(expected_mean)}.")
    return notes


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


def get_parser() -> argparse.ArgumentParser:
    parser = make_parser("convert", __doc__)
    parser.add_argument("--model", required=True, choices=MODELS, help="the torchvision network of --input")
    parser.add_argument("--input", required=True, metavar="FILE", help="torchvision state dict (.pth)")
    parser.add_argument(
        "--output", required=True, metavar="FILE", help="the weights file to write, .pkl or .pth"
    )
    parser.add_argument(
        "--grayscale", action="store_true", help="sum the first conv over RGB (INPUT.FORMAT L)"
    )
    parser.add_argument(
        "--config-file", default="", metavar="FILE", help="check that this config can take the weights"
    )
    parser.add_argument(
        "--select-filters",
        action="store_true",
        help="vgg16 for a width-divided target (--config-file's MODEL.VGG.WIDTH_DIVISOR): keep the filters of "
        "largest L1 norm",
    )
    return parser


def _convert(args: argparse.Namespace) -> None:
    divisor, keep_bias = 1, True
    if args.select_filters and not args.config_file:
        raise QuantMimicInputError("--select-filters needs --config-file: the target's width and norm.")
    if args.config_file:
        check_target_config(args.model, args.config_file, args.select_filters)
        for note in format_notes(args.config_file, args.grayscale):
            print(f"convert: note: {note}", file=sys.stderr)
    if args.select_filters:
        cfg = build_config(args.config_file)
        divisor, keep_bias = cfg.MODEL.VGG.WIDTH_DIVISOR, cfg.MODEL.VGG.NORM == ""
    converted = convert(args.model, load_torchvision(args.input), args.grayscale, divisor, keep_bias)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    save(converted, args.output)
    print(f"Wrote {len(converted)} tensors of torchvision {args.model} to {args.output}")


def main(argv: list[str] | None = None) -> int:
    """0 when the weights are written; 2 (one line ``convert: error: ...``) for bad input."""
    try:
        run("convert", get_parser(), _convert, argv)
    except SystemExit as e:
        if e.code == 2:
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
