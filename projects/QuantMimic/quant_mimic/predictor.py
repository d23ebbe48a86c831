"""Predict and draw: the deployed predictor (or detectron2's ``DefaultPredictor``) and ``Visualizer``.

The config given is the deployed model's (for a ``QuantMimicRCNN`` config its student's: the caller
applies :func:`quant_mimic.config.deployed_config` once), and MODEL.WEIGHTS may be a whole QuantMimicRCNN
checkpoint (``student.*``, ``teacher.*``, ``adapter.*`` keys: the student's are taken), a student export
(``student_final.pth``) or a plain detector checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterator

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer

from .checkpoint import StudentCheckpointer, trained_model
from .deploy import DeployedPredictor, export_deployed
from .deploy.runtime import to_model_format


class Predictor(DefaultPredictor):
    """``DefaultPredictor`` (test-time resize, no_grad, one BGR image in, ``{"instances"}`` out) for the
    model of ``cfg`` (a deployed model's config: :func:`quant_mimic.config.deployed_config`), with
    MODEL.WEIGHTS loaded by :class:`StudentCheckpointer`; the image is converted to the model's
    INPUT.FORMAT (BGR, RGB or grayscale "L", which DefaultPredictor refuses)."""

    def __init__(self, cfg: CfgNode):
        cfg = cfg.clone()
        cfg.defrost()
        weights, cfg.MODEL.WEIGHTS = cfg.MODEL.WEIGHTS, ""  # DefaultPredictor loads nothing ...
        input_format, cfg.INPUT.FORMAT = cfg.INPUT.FORMAT, "BGR"  # ... and takes RGB / BGR only
        super().__init__(cfg)
        self.input_format = self.cfg.INPUT.FORMAT = input_format
        StudentCheckpointer(self.model).load(weights)  # a QM checkpoint's student too
        self.cfg.MODEL.WEIGHTS = weights

    def __call__(self, original_image: np.ndarray) -> dict:
        """One uint8 BGR image array[H, W, 3] -> ``{"instances": Instances}`` in its coordinates."""
        with torch.no_grad():
            image = to_model_format(original_image, self.input_format)
            height, width = image.shape[:2]
            image = self.aug.get_transform(image).apply_image(image)
            tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
            return self.model([{"image": tensor, "height": height, "width": width}])[0]


def _frames(video: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while video.isOpened():
        ok, frame = video.read()
        if not ok:
            break
        yield frame


def deployed_predictor(cfg: CfgNode, folder: str | None = None) -> DeployedPredictor:
    """The deployed form of the model of ``cfg`` (a deployed model's config; MODEL.WEIGHTS loaded, a QM
    checkpoint's student too), written to ``folder`` (default: a temporary folder, removed once loaded)
    and loaded on MODEL.DEVICE."""
    if folder is not None:
        return DeployedPredictor(export_deployed(cfg, trained_model(cfg), folder), cfg.MODEL.DEVICE)
    with tempfile.TemporaryDirectory(prefix="quantmimic-deploy-") as tmp:
        return DeployedPredictor(export_deployed(cfg, trained_model(cfg), tmp), cfg.MODEL.DEVICE)


class VisualizationDemo:
    """Run a detector on images or video frames and draw its detections.

    ``cfg`` is the deployed model's config (:func:`quant_mimic.config.deployed_config`, applied once by
    ``demo.py``). By default the detector runs in its deployed form (:mod:`quant_mimic.deploy`);
    ``eager=True`` runs detectron2's ``GeneralizedRCNN`` instead, for comparison. The class names and
    colours come from the metadata of the config's DATASETS.TEST[0] (a deployed folder: the class names
    it holds).
    """

    def __init__(self, cfg: CfgNode, instance_mode: ColorMode | None = None, *, eager: bool = False):
        self.cpu_device = torch.device("cpu")
        self.predictor = Predictor(cfg) if eager else deployed_predictor(cfg)
        self._set_metadata(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused", instance_mode)

    @classmethod
    def from_deployed(
        cls,
        folder: str,
        device: str = "cpu",
        instance_mode: ColorMode | None = None,
        score_thresh: float = -1,
    ) -> VisualizationDemo:
        """A demo of a deployed folder (no config, no checkpoint); ``score_thresh`` >= 0 replaces its
        score threshold."""
        demo = cls.__new__(cls)
        demo.cpu_device = torch.device("cpu")
        demo.predictor = DeployedPredictor(folder, device)
        if score_thresh >= 0:
            demo.predictor.spec["roi"]["score_thresh"] = score_thresh
        name = demo.predictor.spec.get("dataset", "")
        registered = name in MetadataCatalog.list() and MetadataCatalog.get(name).get("thing_classes", None)
        if not registered:
            name = f"__deployed_{os.path.abspath(folder)}"
            MetadataCatalog.get(name).set(thing_classes=demo.predictor.spec["classes"])
        demo._set_metadata(name, instance_mode)
        return demo

    def _set_metadata(self, dataset: str, instance_mode: ColorMode | None) -> None:
        self.metadata = MetadataCatalog.get(dataset)
        if instance_mode is None:  # the data set's class colours where it has them
            instance_mode = ColorMode.SEGMENTATION if self.metadata.get("thing_colors") else ColorMode.IMAGE
        self.instance_mode = instance_mode

    def run_on_image(self, image: np.ndarray) -> tuple[dict, VisImage]:
        """
        Args:
            image: uint8 array[H, W, 3], BGR (as ``cv2.imread`` or ``read_image(path, "BGR")`` give).

        Returns:
            predictions: the model's output for the image (``{"instances": Instances}``, input coordinates).
            vis_image: the RGB image with the detections drawn (``.get_image()``: uint8 array[H, W, 3]).
        """
        predictions = self.predictor(image)
        visualizer = Visualizer(image[:, :, ::-1], self.metadata, instance_mode=self.instance_mode)
        vis_image = visualizer.draw_instance_predictions(predictions["instances"].to(self.cpu_device))
        return predictions, vis_image

    def run_on_video(self, video: cv2.VideoCapture) -> Iterator[np.ndarray]:
        """Each frame of ``video`` with its detections drawn: uint8 array[H, W, 3], BGR (for VideoWriter /
        imshow). Colours follow tracked instances across frames (detectron2's VideoVisualizer)."""
        mode = self.instance_mode
        if mode not in (ColorMode.IMAGE, ColorMode.IMAGE_BW):
            mode = ColorMode.IMAGE  # the only modes VideoVisualizer draws
        video_visualizer = VideoVisualizer(self.metadata, mode)
        for frame in _frames(video):
            predictions = self.predictor(frame)
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            vis = video_visualizer.draw_instance_predictions(
                rgb, predictions["instances"].to(self.cpu_device)
            )
            yield cv2.cvtColor(vis.get_image(), cv2.COLOR_RGB2BGR)
