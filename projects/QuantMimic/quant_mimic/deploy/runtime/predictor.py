"""The deployed predictor: a folder loaded and run on batches of images (detectron2's ``DefaultPredictor``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .boxes import STATIC_NMS_ROUNDS
from .detector import DeployedDetector
from .folder import NETWORK_FILES, ONNX_FILES, load_spec
from .images import resized_shape, to_model_format
from .onnx_backends import GRAPH_BACKEND, ONNX_BACKENDS, OnnxDetectorGraphs, OnnxNetwork, choose_backend


class DeployedPredictor:
    """Load a deployed folder and predict: detectron2's ``DefaultPredictor``, for batches.

    ``predictor(image)`` takes one uint8 BGR array[H, W, 3] and returns ``{"instances": Instances}`` (as
    ``DefaultPredictor``); ``predictor.predict(images)`` takes a list of them, of any sizes, and runs them
    as one batch; ``predictor.model(batched_inputs)`` is a detectron2-style model (a list of
    ``{"image": Tensor[C, H, W] in the model's format, "height", "width"}``, as a test data loader
    gives) for ``inference_on_dataset``. Boxes are in the input images' coordinates.
    """

    def __init__(
        self,
        folder: str | Path,
        device: str = "cpu",
        *,
        cuda_graphs: bool = False,
        half: bool = False,
        optimize: bool = False,
        backend: str = "auto",
        static_nms_rounds: int = 0,
    ):
        """
        Args:
            folder: written by ``export_deployed`` (``python -m quant_mimic_tools.deploy``).
            device: "cpu" or "cuda[:i]".
            cuda_graphs: replay the whole detector from CUDA graphs, one per input shape (CUDA only):
                the NMS becomes the static-shape :func:`matrix_nms`, and the predictor's one wait for the
                device is the copy of the results.
            half: run the networks in float16 (CUDA only); boxes and scores stay float32.
            optimize: ``torch.jit.optimize_for_inference`` on the TorchScript networks (CPU).
            backend: "torchscript", "onnxruntime" (CPU; the folder's ``*.onnx`` networks, with the code
                between them run by torch), "onnxruntime_graph" (CPU, Faster R-CNN: the whole detector as
                one ONNX Runtime graph per input shape, :class:`OnnxDetectorGraphs`, the networks one by
                one for shapes without a graph) or "auto": the fastest available, measured on these CPUs
                (README): "onnxruntime_graph" (R-FCN: "onnxruntime") where ONNX Runtime is installed and
                the folder has ONNX networks, else "torchscript".
            static_nms_rounds: rounds of :func:`matrix_nms` instead of torchvision's NMS (0: torchvision's;
                with ``cuda_graphs`` 0 means :data:`STATIC_NMS_ROUNDS`). A batch whose static NMS did not
                converge runs again with exact NMS (counted in ``exact_reruns``).
        """
        folder = Path(folder)
        self.spec = load_spec(folder)
        self.device = torch.device(device)
        if (cuda_graphs or half) and self.device.type != "cuda":
            raise ValueError("cuda_graphs and half need a CUDA device.")
        self.backend = choose_backend(backend, self.spec, self.device)
        if static_nms_rounds and self.backend == GRAPH_BACKEND:
            if backend == GRAPH_BACKEND:
                raise ValueError(
                    "The onnxruntime_graph backend runs the exact NMS: leave static_nms_rounds at 0."
                )
            self.backend = "onnxruntime"  # the static NMS is run between the networks
        networks: dict[str, Any] = {}
        threads = torch.get_num_threads()
        for name, file in NETWORK_FILES.items():
            if self.backend in ONNX_BACKENDS:
                networks[name] = OnnxNetwork(folder / ONNX_FILES[name])
                continue
            net = torch.jit.load(str(folder / file), map_location=self.device)
            if half:
                net = net.half()
            net = torch.jit.freeze(net.eval())  # weights become constants of the graph
            if optimize and self.device.type == "cpu":
                net = torch.jit.optimize_for_inference(net)
            networks[name] = net
        self.dtype = torch.float16 if half else torch.float32
        self.detector = DeployedDetector(networks, self.spec).to(self.device).eval()
        if cuda_graphs:
            self.detector.use_cuda_graphs(static_nms_rounds or STATIC_NMS_ROUNDS)
        elif static_nms_rounds:
            self.detector.nms_iterations = static_nms_rounds
        self.graphs = (
            OnnxDetectorGraphs(folder, self.spec, threads) if self.backend == GRAPH_BACKEND else None
        )
        self.exact_reruns = 0  # batches run again with exact NMS (the static NMS did not converge)
        inp = self.spec["input"]
        self.input_format = inp["format"]
        self.pixel_mean = torch.tensor(inp["pixel_mean"], device=self.device).view(-1, 1, 1)
        self.pixel_std = torch.tensor(inp["pixel_std"], device=self.device).view(-1, 1, 1)
        self.metadata = {"thing_classes": self.spec["classes"]}

    def batch(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tensor[C, H, W] images (model format, 0-255) minus the pixel mean, padded with 0 into one
        Tensor[B, C, H', W'] (H', W' multiples of the backbone's size divisibility; detectron2 pads the
        normalised images with 0 too), and their sizes. The backbone network divides by the pixel std."""
        sizes = torch.tensor([list(im.shape[-2:]) for im in images], dtype=torch.int64)
        height, width = self.padded_size(*sizes.max(0).values.tolist())
        # only the padding is zeroed (below): zeroing the whole batch first was a third of this pass
        out = torch.empty(
            (len(images), len(self.pixel_mean), height, width), dtype=self.dtype, device=self.device
        )
        if self.device.type == "cuda":  # one copy of the whole batch from pinned memory (measured on an
            # H200: 32 pageable copies of 600 px images took 6.9 ms, half the student's batch-32 time)
            images = self._upload(images)
        for i, im in enumerate(images):  # uint8 images (as detectron2's loaders give) cross to a GPU as uint8
            # minus the pixel mean as they are copied in, so the networks do not make a pass of their own
            h, w = im.shape[-2:]
            torch.sub(im.to(self.device, non_blocking=True), self.pixel_mean, out=out[i, :, :h, :w])
            out[i, :, h:].zero_()
            out[i, :, :h, w:].zero_()
        return out, sizes.to(self.device, non_blocking=True)

    def _upload(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``images`` on the GPU, through one pinned host buffer and one copy (torch's pinned-memory cache
        keeps the buffer until the copy is done). Views of the GPU batch, each at its own size."""
        height, width = (max(im.shape[d] for im in images) for d in (-2, -1))
        host = torch.empty(
            (len(images), images[0].shape[0], height, width), dtype=images[0].dtype, pin_memory=True
        )
        for i, im in enumerate(images):
            host[i, :, : im.shape[-2], : im.shape[-1]].copy_(im)
        batch = host.to(self.device, non_blocking=True)
        return [batch[i, :, : im.shape[-2], : im.shape[-1]] for i, im in enumerate(images)]

    @torch.no_grad()
    def model(self, batched_inputs: Sequence[dict], lap: Callable[[str], None] | None = None) -> list[dict]:
        """Detectron2-style inference: ``[{"image", "height", "width"}] -> [{"instances": Instances}]``.
        ``lap(part)`` is called after each part (see ``DeployedDetector.forward``; "preprocess" too)."""
        if self.backend not in ONNX_BACKENDS or torch.get_num_threads() == 1:
            return self._model(batched_inputs, lap)
        # ONNX Runtime runs the networks on its own threads; the small tensor ops between them are
        # faster on one torch thread than split across several (measured: README, "Deployment").
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._model(batched_inputs, lap)
        finally:
            torch.set_num_threads(threads)

    def _model(self, batched_inputs: Sequence[dict], lap: Callable[[str], None] | None) -> list[dict]:
        images = [x["image"] for x in batched_inputs]
        results: list[dict] = [{} for _ in images]
        for group in self.size_groups(images):
            tensor, sizes = self.batch([images[i] for i in group])
            if lap is not None:
                lap("preprocess")
            outputs = self.graphs(tensor, sizes) if self.graphs is not None else None
            if outputs is None:  # (under a graph the whole detector is timed as "postprocess", as on CUDA)
                outputs = self.detector(tensor, sizes, lap)
            boxes, scores, classes, valid, converged = (t.cpu() for t in outputs)  # the one wait
            if not converged:  # the static NMS needed more rounds: rare; exact NMS for this batch
                self.exact_reruns += 1
                outputs = self.detector.exact(tensor, sizes)
                boxes, scores, classes, valid, _ = (t.cpu() for t in outputs)
            for j, i in enumerate(group):
                in_h, in_w = images[i].shape[-2:]
                out_size = (batched_inputs[i].get("height", in_h), batched_inputs[i].get("width", in_w))
                instances = to_instances(boxes[j], scores[j], classes[j], valid[j], (in_h, in_w), out_size)
                results[i] = {"instances": instances}
        return results

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The network input size of a ``height`` x ``width`` image (padded to the size divisibility)."""
        divisor = max(self.spec["input"]["size_divisibility"], 1)
        return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor

    def size_groups(self, images: Sequence[torch.Tensor]) -> list[list[int]]:
        """Indices of ``images`` grouped by padded size, each group one batch. Padding an image further
        than its own padded size would change its features near the border (the folded biases make the
        padding non-zero after the first conv), so images of one padded size run together and the
        results equal those of one image at a time."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(self.padded_size(*im.shape[-2:]), []).append(i)
        return list(groups.values())

    def preprocess(self, image: np.ndarray) -> dict:
        """One uint8 BGR image to the model's input dict (format, test-time resize, Tensor[C, H, W])."""
        height, width = image.shape[:2]
        image = to_model_format(image, self.input_format)
        inp = self.spec["input"]
        new_h, new_w = resized_shape(height, width, inp["min_size_test"], inp["max_size_test"])
        if (new_h, new_w) != (height, width):
            pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
            image = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))
            image = image[:, :, None] if image.ndim == 2 else image
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))  # uint8, as detectron2's
        return {"image": tensor, "height": height, "width": width}

    def predict(self, images: Sequence[np.ndarray]) -> list[dict]:
        """A batch of uint8 BGR images of any sizes -> one ``{"instances": Instances}`` each."""
        return self.model([self.preprocess(im) for im in images])

    def __call__(self, image: np.ndarray) -> dict:
        return self.predict([image])[0]

    def as_module(self) -> nn.Module:
        """:meth:`model` as an ``nn.Module`` (what detectron2's ``inference_on_dataset`` takes)."""
        return _PredictorModule(self)


class _PredictorModule(nn.Module):
    def __init__(self, predictor: DeployedPredictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, batched_inputs: Sequence[dict]) -> list[dict]:
        return self.predictor.model(batched_inputs)


def to_instances(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    valid: torch.Tensor,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
):
    """One image's fixed-size outputs as detectron2 ``Instances`` in ``output_size`` coordinates
    (``detector_postprocess``: rescale, clip, drop empty boxes)."""
    from detectron2.structures import Boxes, Instances

    (out_h, out_w), (in_h, in_w) = output_size, input_size
    keep = valid.numpy()  # numpy: a few microseconds per op on a hundred boxes, where torch takes tens
    xyxy = boxes.numpy()[keep] * np.array([out_w / in_w, out_h / in_h] * 2, dtype=np.float32)
    np.clip(xyxy, 0, np.array([out_w, out_h] * 2, dtype=np.float32), out=xyxy)
    nonempty = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    result = Instances(tuple(output_size))
    result.pred_boxes = Boxes(torch.from_numpy(xyxy[nonempty]))
    result.scores = torch.from_numpy(scores.numpy()[keep][nonempty])
    result.pred_classes = torch.from_numpy(classes.numpy()[keep][nonempty])
    return result
