"""Write the deployed form of a trained detector (see :mod:`quant_mimic.deploy.runtime`).

Works for every detector of this project: a student export, a ``QuantMimicRCNN`` checkpoint (its student
is deployed), a teacher (quantized or not), Faster R-CNN (FPN or one level) or R-FCN.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.modeling import GeneralizedRCNN, StandardROIHeads
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.proposal_generator import RPN
from torch import nn

from ..atomic import WriteFailure, atomic_write, find_write_error, fsync_folder, write_failure, write_text
from ..checkpoint import trained_model
from ..config import deployed_config
from ..errors import QuantMimicInputError
from ..modeling.rfcn import RFCNROIHeads
from .fold import fold_batch_norm
from .runtime.folder import (
    DEPLOY_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    NETWORK_FILES,
    ONNX_FILES,
    file_sha256,
)
from .stem import split_narrow_stems

CONFIG_FILE = "config.yaml"
DEPLOY_AGAIN = "free some space (or make the folder writable) and deploy again"


class BackboneNetwork(nn.Module):
    """``forward(images Tensor[B, C, H, W]: 0-255 minus PIXEL_MEAN, padding 0) -> (Tensor[B, C_f, h_f, w_f]
    for f in features)``: division by PIXEL_STD, then the backbone (+ FPN). The runtime subtracts the mean
    while it copies the images into the batch (no pass of its own).

    The division by PIXEL_STD is folded into the first conv's weights where the backbone starts with one
    (``conv(pad0(x / s)) == conv_{W / s}(pad0(x))``, exact to float rounding): one pass over the image
    less. A stem of at most 4 channels is then computed as 4 output phases (:mod:`.stem`: the same
    values, without ONNX Runtime's 16-channel padding). ``model`` must be a copy that may be changed
    (``fold_batch_norm``'s)."""

    def __init__(self, model: GeneralizedRCNN, features: list[str]):
        super().__init__()
        self.backbone = model.backbone
        std = model.pixel_std.detach().clone()
        self.std_folded = fold_input_scale(self.backbone, std.view(-1), len(model.pixel_mean))
        self.register_buffer("pixel_std", torch.ones_like(std) if self.std_folded else std, persistent=False)
        self.stems_split = split_narrow_stems(self.backbone, model.backbone.size_divisibility)
        self.features = features

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.backbone(images if self.std_folded else images / self.pixel_std)
        return tuple(outputs[f] for f in self.features)


@torch.no_grad()
def fold_input_scale(backbone: nn.Module, std: torch.Tensor, channels: int) -> bool:
    """Divide the weights of the conv that takes ``backbone``'s input by ``std`` (per input channel), in
    place, if the first module to see the input is a conv (found by running a small input with hooks).
    Returns whether it folded."""
    seen: list[nn.Module] = []
    probe = torch.zeros(1, channels, 64, 64)
    hooks = [
        m.register_forward_pre_hook(lambda m, args: seen.append(m) if args and args[0] is probe else None)
        for m in backbone.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        backbone(probe)
    finally:
        for h in hooks:
            h.remove()
    if len(seen) != 1 or seen[0].weight.shape[1] != channels or seen[0].groups != 1:
        return False
    seen[0].weight.div_(std.view(1, -1, 1, 1).to(seen[0].weight))
    return True


class RPNHeadNetwork(nn.Module):
    """``forward(*level features) -> (objectness logits Tensor[B, A, h, w] of each level, then anchor
    deltas Tensor[B, A*4, h, w] of each level)``."""

    def __init__(self, rpn_head: nn.Module):
        super().__init__()
        self.rpn_head = rpn_head

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, deltas = self.rpn_head(list(features))
        return tuple(logits) + tuple(deltas)


class BoxHeadNetwork(nn.Module):
    """Faster R-CNN: ``forward(pooled Tensor[N, C, R, R]) -> (class logits Tensor[N, K+1], deltas
    Tensor[N, 4 or 4K])``."""

    def __init__(self, heads: StandardROIHeads):
        super().__init__()
        self.box_head = heads.box_head
        self.box_predictor = heads.box_predictor

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.box_predictor(self.box_head(pooled))


class ScoreMapNetwork(nn.Module):
    """R-FCN: ``forward(feature Tensor[B, C, h, w]) -> (class maps Tensor[B, k*k*(K+1), h, w], box maps
    Tensor[B, k*k*4R, h, w])``."""

    def __init__(self, predictor: nn.Module):
        super().__init__()
        self.predictor = predictor

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.predictor.score_maps(feature)


def check_deployable(model: nn.Module, cfg: CfgNode) -> None:
    """Refuse, in one sentence, a model the deployed runtime does not run."""
    name = cfg.MODEL.META_ARCHITECTURE
    if not isinstance(model, GeneralizedRCNN):
        raise QuantMimicInputError(
            f"META_ARCHITECTURE {name} is not a GeneralizedRCNN: only two-stage detectors deploy."
        )
    if not isinstance(model.proposal_generator, RPN) or not isinstance(
        model.proposal_generator.anchor_generator, DefaultAnchorGenerator
    ):
        raise QuantMimicInputError("Only detectors with detectron2's RPN and DefaultAnchorGenerator deploy.")
    heads = model.roi_heads
    if not isinstance(heads, RFCNROIHeads) and type(heads) is not StandardROIHeads:
        raise QuantMimicInputError(
            f"ROI_HEADS.NAME {cfg.MODEL.ROI_HEADS.NAME} does not deploy: use StandardROIHeads or RFCNROIHeads."
        )
    if cfg.MODEL.MASK_ON or cfg.MODEL.KEYPOINT_ON:
        raise QuantMimicInputError(
            "Mask and keypoint heads do not deploy: set MODEL.MASK_ON and KEYPOINT_ON False."
        )


def deploy_spec(model: GeneralizedRCNN, cfg: CfgNode) -> dict[str, Any]:
    """Everything the runtime needs besides the networks, as plain JSON values."""
    rpn = model.proposal_generator
    anchors = rpn.anchor_generator
    heads = model.roi_heads
    predictor = heads.predictor if isinstance(heads, RFCNROIHeads) else heads.box_predictor
    roi: dict[str, Any] = {
        "num_classes": heads.num_classes,
        "box_weights": list(predictor.box2box_transform.weights),
        "scale_clamp": predictor.box2box_transform.scale_clamp,
        "score_thresh": predictor.test_score_thresh,
        "nms_thresh": predictor.test_nms_thresh,
        "detections_per_image": predictor.test_topk_per_image,
        "candidates_per_image": cfg.MODEL.DEPLOY.CANDIDATES_PER_IMAGE,
    }
    if isinstance(heads, RFCNROIHeads):
        roi["kind"] = "rfcn"
        roi["in_features"] = [heads.in_feature]
        roi["rfcn"] = {
            "pool_size": predictor.pool_size,
            "spatial_scale": predictor.spatial_scale,
            "sampling_ratio": predictor.sampling_ratio,
        }
    else:
        pooler = heads.box_pooler
        roi["kind"] = "fast_rcnn"
        roi["in_features"] = list(heads.box_in_features)
        roi["pooler"] = {
            "resolution": pooler.output_size[0],
            "scales": [p.spatial_scale for p in pooler.level_poolers],
            "sampling_ratio": pooler.level_poolers[0].sampling_ratio,
            "aligned": bool(pooler.level_poolers[0].aligned),
            "canonical_box_size": pooler.canonical_box_size,
            "canonical_level": pooler.canonical_level,
        }
        pooler_type = cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE
        if pooler_type not in ("ROIAlign", "ROIAlignV2"):
            raise QuantMimicInputError(
                f"ROI_BOX_HEAD.POOLER_TYPE {pooler_type} does not deploy: use ROIAlign or ROIAlignV2."
            )
    test_set = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else ""
    classes = MetadataCatalog.get(test_set).get("thing_classes", None) if test_set else None
    features = list(dict.fromkeys(list(rpn.in_features) + roi["in_features"]))
    return {
        "format_version": FORMAT_VERSION,
        "features": features,
        "input": {
            "format": cfg.INPUT.FORMAT,
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
            "max_size_test": cfg.INPUT.MAX_SIZE_TEST,
            "size_divisibility": model.backbone.size_divisibility,
        },
        "rpn": {
            "in_features": list(rpn.in_features),
            "strides": list(anchors.strides),
            "offset": anchors.offset,
            "cell_anchors": [a.tolist() for a in anchors.cell_anchors],
            "box_weights": list(rpn.box2box_transform.weights),
            "scale_clamp": rpn.box2box_transform.scale_clamp,
            "pre_nms_topk": rpn.pre_nms_topk[False],
            "post_nms_topk": rpn.post_nms_topk[False],
            "nms_thresh": rpn.nms_thresh,
            "min_box_size": rpn.min_box_size,
        },
        "roi": roi,
        "dataset": test_set,
        "classes": list(classes) if classes else [str(i) for i in range(heads.num_classes)],
    }


def export_onnx(
    network: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, dynamic_batch: bool
) -> bool:
    """Write ``network`` as ONNX (for ONNX Runtime) with dynamic image sizes (and, for a head, a dynamic
    number of boxes). Returns False, writing nothing, where the exporter cannot express the network
    (the runtime then uses its TorchScript form)."""
    names = [f"input{i}" for i in range(len(inputs))]
    if dynamic_batch:
        axes = {n: {0: "boxes"} for n in names}
    else:
        axes = {n: {0: "batch", 2: f"height{i}", 3: f"width{i}"} for i, n in enumerate(names)}
    try:
        torch.onnx.export(
            network, inputs, str(path), input_names=names, dynamic_axes=axes, opset_version=17, dynamo=False
        )
    except Exception as e:  # an operator the exporter lacks: TorchScript only
        if find_write_error(e) is not None:
            raise  # a full disk is not a missing operator
        logging.getLogger(__name__).warning(f"No ONNX form for {path.name} ({e.__class__.__name__}: {e}).")
        path.unlink(missing_ok=True)
        return False
    return True


def _example_size(cfg: CfgNode, divisor: int) -> int:
    size = max(cfg.INPUT.MIN_SIZE_TEST, 32)
    return math.ceil(size / max(divisor, 1)) * max(divisor, 1)


def write_manifest(folder: Path) -> None:
    """``manifest.json`` of ``folder``: every other file's size and sha256, the manifest and deploy format
    versions and the QuantMimic version that wrote them (the runtime checks it before loading)."""
    from .. import __version__

    files = {
        p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST_FILE
    }
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "format_version": FORMAT_VERSION,
        "written_by": f"QuantMimic {__version__}",
        "files": files,
    }
    write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n", DEPLOY_AGAIN)


def is_deployed_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a deployed model (its deploy.json or its manifest)."""
    return (folder / DEPLOY_FILE).exists() or (folder / MANIFEST_FILE).exists()


def move_into_place(staging: Path, output_dir: Path) -> None:
    """Rename the complete folder ``staging`` to ``output_dir``, replacing an empty folder or a deployed
    one there (the old one is renamed aside first, then removed)."""
    if output_dir.is_dir() and any(output_dir.iterdir()):
        old = output_dir.parent / f".{output_dir.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(output_dir, old)
        os.replace(staging, output_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, output_dir)
    fsync_folder(str(output_dir.parent))


def export_deployed(cfg: CfgNode, model: GeneralizedRCNN, output_dir: str | Path) -> Path:
    """Write the deployed form of ``model`` (eval mode, trained weights loaded) to ``output_dir``, all or
    nothing: the files go into a temporary folder beside it, with ``manifest.json`` (their sizes and
    sha256) last, and that folder is renamed to ``output_dir`` when complete. An empty ``output_dir`` or a
    deployed folder there is replaced; a folder holding anything else is refused.

    Args:
        cfg: the model's config (the deployed model's, see ``quant_mimic.config.deployed_config``):
            its test-time settings (``MODEL.RPN.*_TEST``, ``MODEL.ROI_HEADS.*_TEST``, ``TEST.DETECTIONS_PER_IMAGE``,
            ``MODEL.DEPLOY``) and input format are written with the networks.
        model: the detector; batch norm is folded into a copy, ``model`` itself is not changed.
        output_dir: created if needed; ``deploy.json``, ``backbone.ts``, ``rpn_head.ts``, ``head.ts``
            and ``config.yaml`` are written there.

    Returns:
        The folder.

    Raises:
        QuantMimicInputError: ``output_dir`` holds other files, or the disk is full or not writable
            (nothing is left under ``output_dir`` then, and a deployed folder there is kept).
    """
    check_deployable(model, cfg)
    output_dir = Path(output_dir).absolute()
    if output_dir.exists() and not (
        output_dir.is_dir() and (is_deployed_folder(output_dir) or not any(output_dir.iterdir()))
    ):
        raise QuantMimicInputError(
            f"{output_dir} exists and is not a deployed folder: pass a new or empty folder (nothing was written)."
        )
    staging = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _write_deployed(cfg, model, staging)
        write_manifest(staging)
        move_into_place(staging, output_dir)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, WriteFailure):  # name the file as the user knows it, not the temporary folder
            raise write_failure(output_dir / Path(e.path).name, e.error, DEPLOY_AGAIN) from None
        failed = find_write_error(e)
        if failed is not None:
            raise write_failure(output_dir, failed, DEPLOY_AGAIN) from None
        raise
    return output_dir


def _write_deployed(cfg: CfgNode, model: GeneralizedRCNN, output_dir: Path) -> None:
    """The files of the deployed folder (all but the manifest) into the existing folder ``output_dir``."""
    folded, _ = fold_batch_norm(model.eval())
    folded = folded.cpu()
    spec = deploy_spec(folded, cfg)
    size = _example_size(cfg, spec["input"]["size_divisibility"])
    images = torch.zeros(1, len(cfg.MODEL.PIXEL_MEAN), size, size)
    backbone = BackboneNetwork(folded, spec["features"]).eval()
    rpn_head = RPNHeadNetwork(folded.proposal_generator.rpn_head).eval()
    heads = folded.roi_heads
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape arithmetic
        features = dict(zip(spec["features"], backbone(images)))
        if spec["roi"]["kind"] == "fast_rcnn":
            resolution = spec["roi"]["pooler"]["resolution"]
            channels = features[spec["roi"]["in_features"][0]].shape[1]
            head, head_input = BoxHeadNetwork(heads), torch.zeros(4, channels, resolution, resolution)
        else:
            head, head_input = ScoreMapNetwork(heads.predictor), features[spec["roi"]["in_features"][0]]
        examples = {
            "backbone": (backbone, (images,)),
            "rpn_head": (rpn_head, tuple(features[f] for f in spec["rpn"]["in_features"])),
            "head": (head.eval(), (head_input,)),
        }
        for name, (network, inputs) in examples.items():
            traced = torch.jit.trace(network, inputs)  # frozen on loading, after any dtype change
            with atomic_write(output_dir / NETWORK_FILES[name], "wb", DEPLOY_AGAIN) as f:
                torch.jit.save(traced, f)
        spec["onnx"] = all(
            export_onnx(
                network,
                inputs,
                output_dir / ONNX_FILES[name],
                dynamic_batch=name == "head" and spec["roi"]["kind"] == "fast_rcnn",
            )
            for name, (network, inputs) in examples.items()
        )
    if not spec["onnx"]:
        for file in ONNX_FILES.values():
            (output_dir / file).unlink(missing_ok=True)
    write_text(output_dir / DEPLOY_FILE, json.dumps(spec, indent=2) + "\n", DEPLOY_AGAIN)
    write_text(output_dir / CONFIG_FILE, cfg.dump(), DEPLOY_AGAIN)


def build_and_export(cfg: CfgNode, output_dir: str | Path) -> Path:
    """Build the model of any config of this project (a QuantMimicRCNN config: its student, see
    :func:`quant_mimic.config.deployed_config`), load ``MODEL.WEIGHTS`` (a QM checkpoint's student too)
    and export it."""
    cfg = deployed_config(cfg)
    return export_deployed(cfg, trained_model(cfg), output_dir)
