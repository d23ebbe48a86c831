"""The ONNX Runtime backends of a deployed folder (CPU): its networks one by one, or the whole detector as
one graph per input shape; and the choice of backend."""

from __future__ import annotations

import importlib.util
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .detector import DeployedDetector
from .folder import NETWORK_FILES

GRAPH_BACKEND = "onnxruntime_graph"  # the whole detector as one ONNX Runtime graph per input shape (CPU)
ONNX_BACKENDS = ("onnxruntime", GRAPH_BACKEND)  # the backends that run the folder's ONNX networks
BACKENDS = ("auto", "torchscript", *ONNX_BACKENDS)
# input shapes that get a whole-detector ONNX graph; further shapes run network by network
MAX_ONNX_GRAPHS = 8


def onnx_session(model: str | bytes, threads: int, spinning: bool = False) -> Any:
    """An ONNX Runtime CPU session of ``model`` (a path or the serialized bytes) on ``threads`` threads.
    ``spinning``: its threads busy-wait between operators (fast for a graph of many small operators; wrong
    where torch ops run between sessions and need those cores)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxNetwork:
    """One network of a deployed folder run by ONNX Runtime on the CPU, with torch's thread count:
    ``network(*tensors) -> tuple of tensors``."""

    def __init__(self, path: Path, threads: int = 0):
        self.session = onnx_session(str(path), threads or torch.get_num_threads())
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feeds = {name: x.detach().contiguous().numpy() for name, x in zip(self.input_names, inputs)}
        return tuple(torch.from_numpy(y) for y in self.session.run(None, feeds))


class _Detections(nn.Module):
    """``DeployedDetector.detect`` without its ``converged`` flag (the exact NMS always converges)."""

    def __init__(self, detector: DeployedDetector):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.detector.detect(images, image_sizes)[:4]


class OnnxDetectorGraphs:
    """The whole detector, networks *and* everything between them (top-k, decoding, NMS, ROIAlign), as one
    ONNX Runtime graph per input shape: the CPU's counterpart of :class:`CudaGraphRunner`.

    A shape's graph is traced from the folder's TorchScript networks and :meth:`DeployedDetector.detect`
    (torchvision's NMS and ROIAlign become ONNX ``NonMaxSuppression`` and ``RoiAlign``) the first time the
    shape is seen: under a second for the built-in student. It then runs with no Python and no copies
    between the parts. ``graphs(images, image_sizes)`` returns what ``DeployedDetector.forward`` does, or
    None for a shape beyond the first ``max_graphs`` or when the exporter fails (said once, in the log):
    the caller then runs the networks one by one, with the same results up to float rounding.
    """

    def __init__(self, folder: Path, spec: dict[str, Any], threads: int, max_graphs: int = MAX_ONNX_GRAPHS):
        self.spec, self.threads, self.max_graphs = spec, threads, max_graphs
        # the networks to trace, read now: the folder may be gone by the first call (demo.py's temporary one)
        self.sources = {name: (Path(folder) / f).read_bytes() for name, f in NETWORK_FILES.items()}
        self.sessions: dict[tuple, Any] = {}
        self.failure: str | None = None  # why no graph could be made (then none is tried again)
        self._traced_from: _Detections | None = None

    def __call__(self, images: torch.Tensor, image_sizes: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        key = (tuple(images.shape), images.dtype)
        if key not in self.sessions:
            if self.failure is not None or len(self.sessions) >= self.max_graphs:
                return None
            session = self._build(images, image_sizes)
            if session is None:
                return None
            self.sessions[key] = session
        outputs = self.sessions[key].run(None, {"images": images.numpy(), "image_sizes": image_sizes.numpy()})
        return (*(torch.from_numpy(y) for y in outputs), torch.ones((), dtype=torch.bool))

    def _build(self, images: torch.Tensor, image_sizes: torch.Tensor) -> Any:
        if self._traced_from is None:
            networks = {name: torch.jit.load(io.BytesIO(data)) for name, data in self.sources.items()}
            self._traced_from = _Detections(DeployedDetector(networks, self.spec)).eval()
        buffer = io.BytesIO()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings: the shapes are fixed per graph on purpose
                traced = torch.jit.trace(self._traced_from, (images, image_sizes), check_trace=False)
                torch.onnx.export(
                    traced, (images, image_sizes), buffer, input_names=["images", "image_sizes"],
                    opset_version=17, dynamo=False,
                )  # fmt: skip
            return onnx_session(buffer.getvalue(), self.threads, spinning=True)  # no torch ops between
        except Exception as e:  # an exporter without the legacy path, or an operator it lacks
            self.failure = f"{e.__class__.__name__}: {' '.join(str(e).split())[:300]}"
            logging.getLogger(__name__).warning(
                f"No whole-detector ONNX graph ({self.failure}): the networks run one by one."
            )
            return None


def choose_backend(backend: str, spec: dict[str, Any], device: torch.device) -> str:
    """The backend that runs a deployed folder (see ``DeployedPredictor``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}.")
    if backend in ONNX_BACKENDS and (device.type != "cpu" or not spec.get("onnx")):
        raise ValueError(f"The {backend} backend runs on the CPU, from a folder that has ONNX networks.")
    if backend == GRAPH_BACKEND and spec["roi"]["kind"] != "fast_rcnn":
        raise ValueError(
            "R-FCN has no whole-detector ONNX graph (PS-ROIAlign has no ONNX operator): use the "
            "onnxruntime backend, which runs its networks one by one."
        )
    if backend != "auto":
        return backend
    if device.type == "cpu" and spec.get("onnx") and importlib.util.find_spec("onnxruntime") is not None:
        return GRAPH_BACKEND if spec["roi"]["kind"] == "fast_rcnn" else "onnxruntime"
    return "torchscript"
