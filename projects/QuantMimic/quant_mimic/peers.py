"""torchvision's tiny detectors beside ours ("peers"): what a user would pick instead of a Quantization Mimic
student, built from random initialisation, fed detectron2 data sets with the augmentations of their
torchvision reference recipe, and timed with the project's one timer.

- :data:`PEERS`: each peer's torchvision builder and reference recipe (SGD learning rate per image,
  weight decay, schedule shape, augmentations), from ``references/detection`` of torchvision;
- :func:`build_peer`: the model (``weights=None``; ImageNet backbone weights only when asked);
- :func:`to_target`: a detectron2 dataset dict -> a torchvision target (boxes XYXY_ABS, labels 1..K,
  0 being torchvision's background); :func:`to_instances`: a torchvision output -> detectron2 ``Instances``
  (classes 0..K-1), for detectron2's evaluators;
- :class:`PeerData`: images and targets of a detectron2 data set, augmented reproducibly from a seed;
  :func:`batch_keys`: which images (and augmentation seeds) make iteration ``i`` of a seeded run;
- :func:`learning_rate`: the recipe's learning rate at an iteration;
- :class:`PeerTimer`: parameters, GFLOPs, the size the model really computes on, and latency eager
  (parts lapped by forward hooks) and in ONNX Runtime.

Both peers resize every image inside the model (``model.transform``): SSDlite to 320x320 whatever the
input, the 320 FPN Faster R-CNN to a shorter side of 320 (longer side at most 640).
"""

from __future__ import annotations

import io
import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from detectron2.data import detection_utils
from detectron2.structures import Boxes, BoxMode, Instances
from torch import nn

from .errors import QuantMimicInputError
from .timing import Lap, random_image, time_calls

__all__ = [
    "PEERS",
    "PEER_PARTS",
    "PeerData",
    "PeerTimer",
    "Recipe",
    "augment",
    "batch_keys",
    "build_peer",
    "hflip",
    "iou_crop",
    "learning_rate",
    "to_instances",
    "to_target",
    "warmup_iters",
]


@dataclass(frozen=True)
class Recipe:
    """A peer's torchvision reference recipe (``references/detection/train.py`` and its README).

    lr_per_image: the reference ``--lr`` over its total batch (GPUs x ``--batch-size``), scaled linearly
    to ours; weight_decay: its ``--weight-decay``; schedule: "multistep" (x0.1 at each of ``steps``, as
    fractions of the schedule: ``--lr-steps`` over ``--epochs``) or "cosine" (``cosineannealinglr``);
    augment: its ``--data-augmentation`` preset's geometric transforms, in order; reference: its command.
    """

    lr_per_image: float
    weight_decay: float
    schedule: str
    augment: tuple[str, ...]
    reference: str
    steps: tuple[float, ...] = ()


PEERS: dict[str, Recipe] = {
    # 8 GPUs x 24 images, lr 0.15, 600 epochs, cosine; preset "ssdlite": RandomIoUCrop, RandomHorizontalFlip
    "ssdlite320_mobilenet_v3_large": Recipe(
        lr_per_image=0.15 / 192,
        weight_decay=4e-5,
        schedule="cosine",
        augment=("iou_crop", "hflip"),
        reference="torchrun --nproc_per_node=8 train.py --dataset coco --model ssdlite320_mobilenet_v3_large "
        "--epochs 600 --aspect-ratio-group-factor 3 --lr-scheduler cosineannealinglr --lr 0.15 --batch-size 24 "
        "--weight-decay 0.00004 --data-augmentation ssdlite",
    ),
    # 8 GPUs x 2 images, lr 0.02, 26 epochs, x0.1 at 16 and 22; preset "hflip": RandomHorizontalFlip
    "fasterrcnn_mobilenet_v3_large_320_fpn": Recipe(
        lr_per_image=0.02 / 16,
        weight_decay=1e-4,
        schedule="multistep",
        steps=(16 / 26, 22 / 26),
        augment=("hflip",),
        reference="torchrun --nproc_per_node=8 train.py --dataset coco --model "
        "fasterrcnn_mobilenet_v3_large_320_fpn --epochs 26 --lr-steps 16 22 --aspect-ratio-group-factor 3 "
        "--lr 0.02 --weights-backbone MobileNet_V3_Large_Weights.IMAGENET1K_V1",
    ),
}
# The reference's warm-up: linear from 1/1000 of the learning rate over the first epoch, at most 1000 iterations.
WARMUP_FACTOR = 1e-3
MAX_WARMUP_ITERS = 1000
# IoU crop (SSD paper, torchvision's RandomIoUCrop): crop sides 0.3-1 of the image, aspect 0.5-2, a minimum
# IoU with some box drawn from these (1.0: the image as it is), 40 tries per draw
IOU_CROP_OPTIONS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
IOU_CROP_SCALE = (0.3, 1.0)
IOU_CROP_ASPECT = (0.5, 2.0)
IOU_CROP_TRIALS = 40
HFLIP_PROB = 0.5


def check_peer(name: str) -> Recipe:
    """The recipe of peer ``name``; a one-sentence error for an unknown name."""
    if name not in PEERS:
        raise QuantMimicInputError(f"{name!r} is not a peer: use one of {', '.join(PEERS)}.")
    return PEERS[name]


def build_peer(name: str, num_classes: int, weights_backbone: bool = False) -> nn.Module:
    """torchvision's detector ``name`` for ``num_classes`` object classes (+ background), no detection
    weights; ``weights_backbone``: its ImageNet MobileNetV3-Large backbone (torchvision then freezes the
    first layers and uses frozen BN, as its reference recipe does), else random initialisation with BN.

    Raises:
        QuantMimicInputError: an unknown ``name``, or ImageNet weights that cannot be had (offline).
    """
    from torchvision.models import MobileNet_V3_Large_Weights, detection

    check_peer(name)
    backbone = MobileNet_V3_Large_Weights.IMAGENET1K_V1 if weights_backbone else None
    try:
        return getattr(detection, name)(weights=None, weights_backbone=backbone, num_classes=num_classes + 1)
    except (OSError, RuntimeError) as e:  # urllib's URLError is an OSError
        if not weights_backbone:
            raise
        raise QuantMimicInputError(
            f"--weights-backbone: torchvision could not load {backbone.url.rsplit('/', 1)[-1]} "
            f"({type(e).__name__}: {' '.join(str(e).split())[:120]}): put that file in "
            f"{torch.hub.get_dir()}/checkpoints/, or train from scratch without --weights-backbone."
        ) from None


# ---- data


def to_target(record: dict, num_classes: int) -> dict[str, torch.Tensor]:
    """A detectron2 dataset dict's annotations as a torchvision target.

    Boxes (any ``bbox_mode``, e.g. XYWH_ABS from COCO json) become XYXY_ABS ``boxes`` Tensor[N, 4] float32
    in pixels; ``category_id`` 0..K-1 becomes ``labels`` Tensor[N] int64 1..K (torchvision's 0 is the
    background). Crowd regions and boxes without area are left out (as detectron2's mapper does).

    Raises:
        QuantMimicInputError: a category id outside 0..num_classes-1.
    """
    boxes, labels = [], []
    for ann in record.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        box = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        category = ann["category_id"]
        if not 0 <= category < num_classes:
            raise QuantMimicInputError(
                f"{record.get('file_name', 'an image')}: category_id {category} is not one of the data set's "
                f"{num_classes} classes (0..{num_classes - 1}): fix its annotations."
            )
        boxes.append(box)
        labels.append(category + 1)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def to_instances(output: dict[str, torch.Tensor], image_size: tuple[int, int]) -> Instances:
    """A torchvision detection (``boxes`` XYXY_ABS in input pixels, ``scores``, ``labels`` 1..K) as
    detectron2 ``Instances`` of ``image_size`` (height, width) with ``pred_classes`` 0..K-1."""
    instances = Instances(image_size)
    instances.pred_boxes = Boxes(output["boxes"].detach().float().cpu())
    instances.scores = output["scores"].detach().float().cpu()
    instances.pred_classes = output["labels"].detach().cpu().long() - 1
    return instances


def hflip(image: torch.Tensor, target: dict, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """Flip Tensor[3, H, W] and its boxes left-right with probability 1/2 (RandomHorizontalFlip)."""
    if rng.random() >= HFLIP_PROB:
        return image, target
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes}


def iou_crop(image: torch.Tensor, target: dict, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """SSD's random crop (torchvision's RandomIoUCrop, drawn from ``rng``): draw a minimum IoU from
    :data:`IOU_CROP_OPTIONS` (1.0 keeps the image); try crops with sides 0.3-1 of the image and aspect
    0.5-2 until one holds the centre of some box and has an IoU of at least that minimum with one of them;
    keep the boxes whose centres it holds, clipped to it. An image without boxes is kept as it is."""
    from torchvision.ops import box_iou

    boxes = target["boxes"]
    if len(boxes) == 0:
        return image, target
    height, width = image.shape[-2:]
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    while True:
        min_iou = IOU_CROP_OPTIONS[rng.integers(len(IOU_CROP_OPTIONS))]
        if min_iou >= 1.0:
            return image, target
        for _ in range(IOU_CROP_TRIALS):
            scale = IOU_CROP_SCALE[0] + (IOU_CROP_SCALE[1] - IOU_CROP_SCALE[0]) * rng.random(2)
            new_w, new_h = int(width * scale[0]), int(height * scale[1])
            if new_h == 0 or not IOU_CROP_ASPECT[0] <= new_w / new_h <= IOU_CROP_ASPECT[1]:
                continue
            offset = rng.random(2)
            left, top = int((width - new_w) * offset[0]), int((height - new_h) * offset[1])
            right, bottom = left + new_w, top + new_h
            if left == right or top == bottom:
                continue
            inside = (
                (left < centers[:, 0])
                & (centers[:, 0] < right)
                & (top < centers[:, 1])
                & (centers[:, 1] < bottom)
            )
            if not inside.any():
                continue
            crop = torch.tensor([[left, top, right, bottom]], dtype=boxes.dtype)
            if box_iou(boxes[inside], crop).max() < min_iou:
                continue
            kept = boxes[inside] - torch.tensor([left, top, left, top], dtype=boxes.dtype)
            kept[:, 0::2] = kept[:, 0::2].clamp(0, new_w)
            kept[:, 1::2] = kept[:, 1::2].clamp(0, new_h)
            cropped = {**target, "boxes": kept, "labels": target["labels"][inside]}
            return image[:, top:bottom, left:right], cropped


AUGMENTATIONS: dict[str, Callable[[torch.Tensor, dict, np.random.Generator], tuple[torch.Tensor, dict]]] = {
    "iou_crop": iou_crop,
    "hflip": hflip,
}


def augment(
    names: tuple[str, ...], image: torch.Tensor, target: dict, rng: np.random.Generator
) -> tuple[torch.Tensor, dict]:
    """``image`` (Tensor[3, H, W]) and ``target`` through the augmentations ``names``, in order."""
    for name in names:
        image, target = AUGMENTATIONS[name](image, target, rng)
    return image, target


def read_image(record: dict) -> torch.Tensor:
    """The image of a dataset dict as torchvision's detectors take it: Tensor[3, H, W] float RGB in 0-1."""
    array = detection_utils.read_image(record["file_name"], format="RGB")
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)  # a writable copy


class PeerData(torch.utils.data.Dataset):
    """The images and targets of detectron2 dataset dicts, ``data[(index, seed)]`` -> (Tensor[3, H, W] in
    0-1, target), augmented with ``augmentations`` drawn from ``seed`` (the same pair gives the same
    sample in any process, so a resumed run sees what it would have seen)."""

    def __init__(self, records: list[dict], num_classes: int, augmentations: tuple[str, ...] = ()):
        self.records, self.num_classes, self.augmentations = records, num_classes, augmentations

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, dict]:
        index, seed = key
        record = self.records[index]
        image, target = read_image(record), to_target(record, self.num_classes)
        return augment(self.augmentations, image, target, np.random.default_rng(seed))


def batch_keys(num_images: int, batch: int, seed: int, iteration: int) -> list[tuple[int, int]]:
    """The ``(index, augmentation seed)`` of each image of iteration ``iteration`` of a run seeded ``seed``:
    the images in a new seeded order each epoch, one epoch after the other."""
    keys = []
    for k in range(iteration * batch, (iteration + 1) * batch):
        epoch, position = divmod(k, num_images)
        order = np.random.default_rng([seed, epoch]).permutation(num_images)
        keys.append((int(order[position]), int(np.random.SeedSequence([seed, k]).generate_state(1)[0])))
    return keys


def warmup_iters(num_images: int, batch: int) -> int:
    """The reference's warm-up length: the first epoch, at most 1000 iterations."""
    return max(0, min(MAX_WARMUP_ITERS, math.ceil(num_images / batch) - 1))


def learning_rate(recipe: Recipe, base_lr: float, iteration: int, max_iter: int, warmup: int) -> float:
    """The learning rate of ``iteration`` (0-based): ``base_lr`` shaped by the recipe's schedule over
    ``max_iter`` iterations, times a linear warm-up from :data:`WARMUP_FACTOR` over ``warmup`` iterations."""
    if recipe.schedule == "cosine":
        lr = base_lr * 0.5 * (1 + math.cos(math.pi * iteration / max_iter))
    else:
        lr = base_lr * 0.1 ** sum(iteration >= round(f * max_iter) for f in recipe.steps)
    if iteration < warmup:
        alpha = iteration / warmup
        lr *= WARMUP_FACTOR * (1 - alpha) + alpha
    return lr


# ---- cost

# The parts of a peer's inference: preprocess (model.transform: normalise, resize, pad), backbone (+FPN /
# extra layers), heads (Faster R-CNN: RPN + ROI box head up to its predictor; SSD: the dense head),
# postprocess (anchors, box decoding, score threshold, NMS, rescale to the input size).
PEER_PARTS = ("preprocess", "backbone", "heads", "postprocess")


class _Outputs(nn.Module):
    """One image in, the first image's boxes, scores and labels out (what fvcore's tracer and the ONNX
    exporter need)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model([image])[0]
        return out["boxes"], out["scores"], out["labels"]


class PeerTimer:
    """Cost of one peer model in eval mode on the CPU (or ``device``): its size and FLOPs, eager latency
    with :data:`PEER_PARTS` lapped by forward hooks (the model's own forward runs unchanged), and the
    latency of the whole model exported to ONNX (one graph per input size) and run by ONNX Runtime."""

    def __init__(self, name: str, model: nn.Module, weights: str = "random", device: str = "cpu"):
        self.name, self.weights, self.device = name, weights, torch.device(device)
        self.model = model.to(self.device).eval()
        self._lap: Lap = lambda part: None
        heads = model.roi_heads.box_predictor if hasattr(model, "roi_heads") else model.head
        model.backbone.register_forward_pre_hook(lambda *_: self._lap("preprocess"))
        model.backbone.register_forward_hook(lambda *_: self._lap("backbone"))
        heads.register_forward_hook(lambda *_: self._lap("heads"))
        self.sessions: dict[tuple[int, int], Any] = {}

    def kinds(self) -> list[str]:
        """The ways to run it: eager, and ONNX Runtime on the CPU."""
        return ["eager", "onnxruntime"] if self.device.type == "cpu" else ["eager"]

    def image(self, height: int, width: int) -> torch.Tensor:
        """The noise image every way to run is timed on: Tensor[3, height, width] in 0-1."""
        return random_image(height, width, device=self.device) / 255

    @torch.no_grad()
    def cost(self, height: int, width: int) -> dict[str, Any]:
        """``params``, ``backbone_params``, fvcore ``gflops`` / ``backbone_gflops`` (one multiply-add = one
        flop) of one ``height`` x ``width`` image, and ``computes_at`` (the resized size the network runs
        on) and ``padded_to`` (its input tensor's size)."""
        from fvcore.nn import FlopCountAnalysis

        image = self.image(height, width)
        resized, _ = self.model.transform([image])
        analysis = FlopCountAnalysis(_Outputs(self.model), (image,))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            total, backbone = analysis.total(), analysis.by_module().get("model.backbone", 0)
        return {
            "params": sum(p.numel() for p in self.model.parameters()),
            "backbone_params": sum(p.numel() for p in self.model.backbone.parameters()),
            "gflops": total / 1e9,
            "backbone_gflops": backbone / 1e9,
            "computes_at": list(resized.image_sizes[0]),
            "padded_to": list(resized.tensors.shape[-2:]),
        }

    def session(self, height: int, width: int) -> Any:
        """The ONNX Runtime session of the whole model for ``height`` x ``width`` images (exported on first
        use, with the exporter the deployed models use), on torch's thread count."""
        if (height, width) not in self.sessions:
            from .deploy.runtime import onnx_session

            buffer = io.BytesIO()
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings: one graph per input size on purpose
                torch.onnx.export(
                    _Outputs(self.model).eval(), (self.image(height, width),), buffer, input_names=["image"],
                    opset_version=17, dynamo=False,
                )  # fmt: skip
            self.sessions[height, width] = onnx_session(
                buffer.getvalue(), torch.get_num_threads(), spinning=True
            )
        return self.sessions[height, width]

    def latency(self, kind: str, height: int, width: int, repeats: int, warmup: int) -> dict[str, Any]:
        """Median latency of one ``height`` x ``width`` image run the way ``kind`` (eager: total and each
        of :data:`PEER_PARTS`; onnxruntime: total, one call), its ``detections`` and the settings."""
        image = self.image(height, width)
        if kind == "eager":

            def run(lap: Lap) -> int:
                self._lap = lap
                try:
                    with torch.no_grad():
                        out = self.model([image])
                finally:
                    self._lap = lambda part: None
                lap("postprocess")
                return len(out[0]["scores"])

            parts = PEER_PARTS
        elif kind == "onnxruntime":
            session = self.session(height, width)
            feeds = {session.get_inputs()[0].name: image.cpu().numpy()}

            def run(lap: Lap) -> int:
                return len(session.run(None, feeds)[1])

            parts = ()
        else:
            raise ValueError(f"kind {kind!r} is not one of {self.kinds()}")
        timing = time_calls(run, repeats, warmup, self.device)
        return {
            "latency_ms": timing.median_ms(parts),
            "detections": int(statistics.median(timing.results)),
            "input_size": [height, width],
            "repeats": repeats,
            "warmup": warmup,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "weights": self.weights,
        }
