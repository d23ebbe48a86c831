"""The deployed detector's runtime: a folder written by :func:`quant_mimic.deploy.export_deployed`, loaded and run.

The folder holds ``deploy.json`` (test-time settings, anchors, input format, class names) and three
traced TorchScript networks (frozen when loaded; also as ONNX), batch norm folded into their convs:
``backbone.ts`` (backbone + FPN, 1/PIXEL_STD folded into its first conv), ``rpn_head.ts`` (the RPN head's
convs) and ``head.ts`` (Faster R-CNN: box head + predictor; R-FCN: the position-sensitive score-map convs).
Everything between the networks runs here, batched over the images of a call, with fixed-size top-k and
one NMS call per stage for all images (on the CPU, all of it in one ONNX Runtime graph per input shape,
:class:`OnnxDetectorGraphs`):

    images - PIXEL_MEAN, padded -> backbone.ts -> rpn_head.ts
           -> per level: top-k anchors by objectness, decode, clip, drop small boxes
           -> one NMS over (image, level) groups -> top POST_NMS_TOPK proposals per image
           -> ROIAlign (FPN level per box) -> head.ts | PS-ROIAlign + voting (R-FCN)
           -> softmax, decode, clip, score threshold -> top CANDIDATES per image
           -> one NMS over (image, class) groups -> top DETECTIONS_PER_IMAGE per image

Only torch, torchvision, numpy and Pillow are needed to load and run it (``detectron2.structures`` only
to hand back ``Instances``): no model registry, no config, no training code. The results equal
detectron2's ``GeneralizedRCNN.inference`` with the same settings, up to float rounding and the fixed
number of candidates per image (see ``MODEL.DEPLOY``).

Its files, one concept each: :mod:`.folder` (the folder's format and checks), :mod:`.boxes` (anchors, box
decoding, NMS), :mod:`.detector` (``DeployedDetector`` and its CUDA graphs), :mod:`.onnx_backends` (ONNX
Runtime), :mod:`.images` (resize and input format) and :mod:`.predictor` (``DeployedPredictor``). The package
imports nothing else of ``quant_mimic``: it loads on its own, from its folder.
"""

# what the project imports from here; everything else from the module of its concept
from .boxes import clip_boxes, decode_boxes, finite, grid_anchors, matrix_nms
from .detector import DeployedDetector
from .folder import (
    DEPLOY_FILE,
    MANIFEST_FILE,
    ONNX_FILES,
    DeployedFolderError,
    check_manifest,
    file_sha256,
    load_spec,
)
from .images import resized_shape, to_model_format
from .onnx_backends import GRAPH_BACKEND, choose_backend, onnx_session
from .predictor import DeployedPredictor

__all__ = [
    "DEPLOY_FILE", "GRAPH_BACKEND", "MANIFEST_FILE", "ONNX_FILES", "DeployedDetector", "DeployedFolderError",
    "DeployedPredictor", "check_manifest", "choose_backend", "clip_boxes", "decode_boxes", "file_sha256",
    "finite", "grid_anchors", "load_spec", "matrix_nms", "onnx_session", "resized_shape", "to_model_format",
]  # fmt: skip
