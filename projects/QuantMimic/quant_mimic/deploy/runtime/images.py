"""Image preparation of the deployed predictor: the test-time resize and the model's input format."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resized_shape(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """(height, width) after detectron2's ``ResizeShortestEdge(short_edge, max_size)`` (0: no resize)."""
    if short_edge == 0:
        return height, width
    scale = short_edge / min(height, width)
    new_h, new_w = (short_edge, scale * width) if height < width else (scale * height, short_edge)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def to_model_format(image: np.ndarray, input_format: str) -> np.ndarray:
    """A uint8 BGR image array[H, W, 3] (``cv2.imread``) in the model's INPUT.FORMAT ("BGR", "RGB" or
    "L": array[H, W, 1], PIL's luma, as detectron2's ``read_image`` gives). A 2-D array is taken as gray."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if input_format == "BGR":
        return image
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    if input_format == "RGB":
        return rgb
    if input_format == "L":
        return np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None]
    raise ValueError(
        f"INPUT.FORMAT {input_format!r} is not supported by the deployed predictor: use BGR, RGB or L."
    )
