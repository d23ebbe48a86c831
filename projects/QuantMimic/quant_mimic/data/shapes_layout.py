"""Object placement and annotation of the QuantMimic shapes data set.

:func:`render_image` draws one image: background and clutter (not annotated), then ``min_objects``
to ``max_objects`` objects at random positions. Objects may overlap: later objects are drawn on top,
and a placement is retried while it would hide more than ``max_overlap`` of an earlier object (after
20 tries the object is skipped). :func:`visible_objects` annotates what remains visible: an
annotation is dropped when more than ``max_hidden_fraction`` of its object is hidden, and every box
is the tight box of the object's *visible* pixels. All coordinates are in pixels, boxes are COCO
``[x, y, w, h]`` with ``x, y`` the top-left corner of the top-left visible pixel and ``w, h`` counted
in whole pixels (>= 1).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from .shapes_draw import CLUTTER, SHAPE_MASKS, TEXTURES, draw_background, pick_colors
from .shapes_spec import SHAPE_CLASSES, SHAPE_TEXTURES, ShapesSpec

__all__ = ["render_image", "visible_objects"]


def _object_size(rng: np.random.Generator, spec: ShapesSpec) -> int:
    """Side of the object's bounding square, pixels."""
    if rng.random() < spec.small_object_prob:
        return int(rng.integers(spec.min_object_size, max(spec.small_object_size, spec.min_object_size + 1)))
    lo, hi = math.log(spec.small_object_size), math.log(spec.max_object_size + 1)
    return min(int(math.exp(rng.uniform(lo, hi))), spec.max_object_size)


def visible_objects(
    masks: Sequence[np.ndarray], category_ids: Sequence[int], max_hidden_fraction: float = 0.6
) -> List[Dict[str, Any]]:
    """Annotations of objects drawn in order (later ones on top), by what remains visible.

    Args:
        masks: one bool (H, W) mask per object, in drawing order.
        category_ids: one COCO category id per object.
        max_hidden_fraction: objects with more than this fraction of their pixels covered by
            later objects are dropped.

    Returns:
        one dict per kept object, in drawing order: ``category_id``, ``bbox`` = [x, y, w, h]
        (ints, px: the tight box of the visible pixels, so ``w, h >= 1`` and it lies inside the
        image) and ``area`` = ``w * h`` (px^2, the box area, as detectron2 writes for annotations
        without segmentation).
    """
    if len(masks) != len(category_ids):
        raise ValueError("need one category id per mask")
    if len(masks) == 0:
        return []
    covered = np.zeros(masks[0].shape, dtype=bool)  # union of the masks drawn later
    kept_reversed: List[Dict[str, Any]] = []
    for m, cat in zip(reversed(masks), reversed(category_ids)):  # top-most first
        vis = m & ~covered
        covered |= m
        n_vis = int(vis.sum())
        if n_vis == 0 or n_vis < (1 - max_hidden_fraction) * int(m.sum()):
            continue
        ys, xs = np.nonzero(vis)
        x, y = int(xs.min()), int(ys.min())
        w, h = int(xs.max()) + 1 - x, int(ys.max()) + 1 - y
        kept_reversed.append({"category_id": int(cat), "bbox": [x, y, w, h], "area": w * h})
    return kept_reversed[::-1]


def render_image(rng: np.random.Generator, spec: ShapesSpec) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Draw one image and its annotations.

    Returns:
        image: uint8 array of shape (image_size, image_size, 3), **RGB**.
        objects: one dict per visible object, in drawing order, with ``category_id`` (1..5),
            ``bbox`` and ``area``, as returned by :func:`visible_objects`.
    """
    size = spec.image_size
    img = draw_background(rng, size)
    n_clutter = int(rng.integers(spec.clutter // 2, spec.clutter + (spec.clutter + 1) // 2 + 1))
    for _ in range(n_clutter):
        CLUTTER[int(rng.integers(len(CLUTTER)))](img, rng)
    bg = img.copy()

    masks: List[np.ndarray] = []  # full (size, size) bool mask of each placed object
    visible: List[np.ndarray] = []  # part of each mask not covered by later objects
    classes: List[int] = []
    for _ in range(int(rng.integers(spec.min_objects, spec.max_objects + 1))):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        s = _object_size(rng, spec)
        patch_mask = SHAPE_MASKS[SHAPE_CLASSES[cls]](s, rng)
        for _attempt in range(20):
            x0, y0 = (int(v) for v in rng.integers(0, size - s + 1, size=2))
            full = np.zeros((size, size), bool)
            full[y0 : y0 + s, x0 : x0 + s] = patch_mask
            if all((vis & ~full).sum() >= (1 - spec.max_overlap) * m.sum() for m, vis in zip(masks, visible)):
                break
        else:
            continue  # no placement hides little enough of the earlier objects: skip this object
        bg_mean = bg[y0 : y0 + s, x0 : x0 + s][patch_mask].mean(axis=0)
        colors = pick_colors(rng, bg_mean, spec.min_contrast, spec.min_luma_contrast)
        texture = TEXTURES[SHAPE_TEXTURES[cls]](s, colors, rng)
        region = img[y0 : y0 + s, x0 : x0 + s]
        region[patch_mask] = texture[patch_mask]
        for vis in visible:
            vis &= ~full
        masks.append(full)
        visible.append(full.copy())
        classes.append(cls)

    if spec.noise_std > 0:
        img += rng.normal(0.0, spec.noise_std, size=img.shape).astype(np.float32)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)

    return image, visible_objects(masks, [c + 1 for c in classes], spec.max_hidden_fraction)
