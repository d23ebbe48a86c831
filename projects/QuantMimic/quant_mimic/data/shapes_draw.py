"""Drawing primitives of the QuantMimic shapes data set: backgrounds, clutter, shape masks, textures
and object colours.

Every function draws from the ``numpy.random.Generator`` it is given, in a fixed order, so that a
seeded generator reproduces the same pixels. Patches and images are float32 RGB in [0, 255];
coordinates are pixels; masks are bool. cv2 draws polygons and lines with ``_SHIFT`` sub-pixel bits.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

import cv2
import numpy as np

__all__ = [
    "CLUTTER",
    "SHAPE_MASKS",
    "TEXTURES",
    "Color",
    "checkered_texture",
    "circle_mask",
    "draw_background",
    "draw_clutter_blob",
    "draw_clutter_line",
    "draw_clutter_scribble",
    "gradient_texture",
    "pick_colors",
    "ring_mask",
    "solid_texture",
    "square_mask",
    "star_mask",
    "striped_texture",
    "triangle_mask",
]

_SHIFT = 4  # sub-pixel bits for cv2 polygon/circle drawing
_SCALE = 1 << _SHIFT

Color = np.ndarray  # float32 array of shape (3,), RGB in [0, 255]


# --------------------------------------------------------------------------------------------
# backgrounds and clutter
# --------------------------------------------------------------------------------------------


def draw_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random background: linear gradient between two colours plus low-frequency noise.

    Returns:
        float32 array of shape (size, size, 3), RGB in [0, 255].
    """
    c0 = rng.uniform(20, 235, size=3)
    c1 = np.clip(c0 + rng.uniform(-70, 70, size=3), 0, 255)
    theta = rng.uniform(0, 2 * np.pi)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    t = np.cos(theta) * coords[None, :] + np.sin(theta) * coords[:, None] + 0.5  # (size, size)
    t = np.clip(t, 0.0, 1.0)[..., None]
    img = (1 - t) * c0[None, None, :] + t * c1[None, None, :]
    grid = rng.normal(0.0, 12.0, size=(5, 5, 3)).astype(np.float32)
    img += cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(img, 0, 255).astype(np.float32)


def _blend(img: np.ndarray, mask: np.ndarray, color: Color, alpha: float) -> None:
    """In place: ``img[mask] = (1 - alpha) * img[mask] + alpha * color``."""
    img[mask] = (1 - alpha) * img[mask] + alpha * color


def draw_clutter_line(img: np.ndarray, rng: np.random.Generator) -> None:
    """In place: a thin (1 px) straight line, 20-120 px long, half transparent."""
    size = img.shape[0]
    p0 = rng.uniform(0, size, size=2)
    ang = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(20, 120)
    p1 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
    mask = np.zeros(img.shape[:2], np.uint8)
    pts = np.round(np.stack([p0, p1]) * _SCALE).astype(np.int32)
    cv2.line(mask, tuple(pts[0]), tuple(pts[1]), 1, 1, cv2.LINE_8, _SHIFT)
    _blend(img, mask.astype(bool), rng.uniform(0, 255, 3), rng.uniform(0.35, 0.7))


def draw_clutter_blob(img: np.ndarray, rng: np.random.Generator) -> None:
    """In place: a small filled ellipse (axes 1-3 px), half transparent."""
    size = img.shape[0]
    center = tuple(int(v) for v in rng.integers(0, size, size=2))
    axes = tuple(int(v) for v in rng.integers(1, 4, size=2))
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    _blend(img, mask.astype(bool), rng.uniform(0, 255, 3), rng.uniform(0.4, 0.75))


def draw_clutter_scribble(img: np.ndarray, rng: np.random.Generator) -> None:
    """In place: an open random-walk polyline (4-8 points, steps 4-14 px, 1 px thick)."""
    size = img.shape[0]
    n = int(rng.integers(4, 9))
    angles = rng.uniform(0, 2 * np.pi, size=n - 1)
    steps = rng.uniform(4, 14, size=n - 1)[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    pts = np.concatenate([rng.uniform(0, size, size=(1, 2)), steps]).cumsum(axis=0)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.polylines(mask, [np.round(pts * _SCALE).astype(np.int32)], False, 1, 1, cv2.LINE_8, _SHIFT)
    _blend(img, mask.astype(bool), rng.uniform(0, 255, 3), rng.uniform(0.35, 0.7))


# The clutter items render_image draws at random (not annotated).
CLUTTER: Tuple[Callable[[np.ndarray, np.random.Generator], None], ...] = (
    draw_clutter_line,
    draw_clutter_blob,
    draw_clutter_scribble,
)


# --------------------------------------------------------------------------------------------
# shape masks: each returns a bool mask of shape (s, s) for an object centred in an s x s patch
# --------------------------------------------------------------------------------------------


def _polygon_mask(s: int, pts: np.ndarray) -> np.ndarray:
    """Bool (s, s) mask of the filled polygon ``pts`` (n, 2) given in patch pixel coordinates."""
    mask = np.zeros((s, s), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * _SCALE).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    return mask.astype(bool)


def _regular_points(s: int, n: int, radius: float, angle: float) -> np.ndarray:
    """(n, 2) vertices of a regular n-gon of circumradius ``radius`` centred in an s x s patch."""
    c = (s - 1) / 2.0
    a = angle + 2 * np.pi * np.arange(n) / n
    return np.stack([c + radius * np.cos(a), c + radius * np.sin(a)], axis=1)


def circle_mask(s: int, rng: np.random.Generator) -> np.ndarray:
    """Filled disc of diameter ``s`` px. Returns bool (s, s)."""
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    c = (s - 1) / 2.0
    return (xx - c) ** 2 + (yy - c) ** 2 <= (s / 2.0) ** 2


def square_mask(s: int, rng: np.random.Generator) -> np.ndarray:
    """Square rotated by a random angle, as large as fits the s x s patch. Returns bool (s, s)."""
    angle = rng.uniform(0, np.pi / 2)
    # circumradius r of a square rotated by `angle` whose axis-aligned extent is s:
    radius = s / 2.0 / max(abs(math.cos(angle + np.pi / 4)), abs(math.sin(angle + np.pi / 4)))
    return _polygon_mask(s, _regular_points(s, 4, radius - 0.5, angle + np.pi / 4))


def triangle_mask(s: int, rng: np.random.Generator) -> np.ndarray:
    """Equilateral triangle with circumradius s/2, random rotation. Returns bool (s, s)."""
    return _polygon_mask(s, _regular_points(s, 3, s / 2.0 - 0.5, rng.uniform(0, 2 * np.pi)))


def star_mask(s: int, rng: np.random.Generator) -> np.ndarray:
    """Five-pointed star, outer radius s/2, inner radius 0.45 s/2, random rotation. Bool (s, s)."""
    outer = _regular_points(s, 5, s / 2.0 - 0.5, rng.uniform(0, 2 * np.pi))
    c = (s - 1) / 2.0
    inner = c + 0.45 * (np.roll(outer, -1, axis=0) + outer - 2 * c) / (2 * math.cos(math.pi / 5))
    pts = np.stack([outer, inner], axis=1).reshape(-1, 2)
    return _polygon_mask(s, pts)


def ring_mask(s: int, rng: np.random.Generator) -> np.ndarray:
    """Annulus with outer diameter s and inner diameter 0.45-0.6 s. Returns bool (s, s)."""
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    c = (s - 1) / 2.0
    r2 = (xx - c) ** 2 + (yy - c) ** 2
    inner = rng.uniform(0.45, 0.6) * s / 2.0
    return (r2 <= (s / 2.0) ** 2) & (r2 >= inner**2)


# --------------------------------------------------------------------------------------------
# textures: each returns a float32 (s, s, 3) RGB patch painted with the given colours
# --------------------------------------------------------------------------------------------


def solid_texture(s: int, colors: Tuple[Color, Color], rng: np.random.Generator) -> np.ndarray:
    """Uniform patch of ``colors[0]``. Returns float32 (s, s, 3)."""
    return np.broadcast_to(colors[0].astype(np.float32), (s, s, 3)).copy()


def _oriented_coord(s: int, angle: float) -> np.ndarray:
    """(s, s) float32 coordinate along direction ``angle`` (radians), 0 at the patch centre."""
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) - (s - 1) / 2.0
    return np.cos(angle) * xx + np.sin(angle) * yy


def striped_texture(s: int, colors: Tuple[Color, Color], rng: np.random.Generator) -> np.ndarray:
    """Stripes of two colours at a random angle; period s/5..s/3, at least 4 px. (s, s, 3)."""
    period = max(4.0, s / rng.uniform(3.0, 5.0))
    u = _oriented_coord(s, rng.uniform(0, np.pi)) / period + rng.uniform(0, 1)
    sel = (np.floor(u) % 2).astype(bool)[..., None]
    return np.where(sel, colors[0], colors[1]).astype(np.float32)


def checkered_texture(s: int, colors: Tuple[Color, Color], rng: np.random.Generator) -> np.ndarray:
    """Checkerboard of two colours, cell s/5..s/3 (at least 3 px), random rotation. (s, s, 3)."""
    cell = max(3.0, s / rng.uniform(3.0, 5.0))
    angle = rng.uniform(0, np.pi / 2)
    u = np.floor(_oriented_coord(s, angle) / cell)
    v = np.floor(_oriented_coord(s, angle + np.pi / 2) / cell)
    sel = ((u + v) % 2).astype(bool)[..., None]
    return np.where(sel, colors[0], colors[1]).astype(np.float32)


def gradient_texture(s: int, colors: Tuple[Color, Color], rng: np.random.Generator) -> np.ndarray:
    """Linear gradient from ``colors[0]`` to ``colors[1]`` along a random direction. (s, s, 3)."""
    t = np.clip(_oriented_coord(s, rng.uniform(0, 2 * np.pi)) / max(s - 1, 1) + 0.5, 0, 1)[..., None]
    return ((1 - t) * colors[0] + t * colors[1]).astype(np.float32)


# Class name (SHAPE_CLASSES) -> mask function; texture name (SHAPE_TEXTURES) -> texture function.
SHAPE_MASKS: Dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "circle": circle_mask,
    "square": square_mask,
    "triangle": triangle_mask,
    "star": star_mask,
    "ring": ring_mask,
}
TEXTURES: Dict[str, Callable[[int, Tuple[Color, Color], np.random.Generator], np.ndarray]] = {
    "solid": solid_texture,
    "striped": striped_texture,
    "checkered": checkered_texture,
    "gradient": gradient_texture,
}


_LUMA = np.array([0.299, 0.587, 0.114])


def pick_colors(
    rng: np.random.Generator, bg_mean: np.ndarray, min_contrast: float, min_luma_contrast: float
) -> Tuple[Color, Color]:
    """Two random RGB colours, each >= ``min_contrast`` (Euclidean RGB distance) and
    >= ``min_luma_contrast`` (luminance) from ``bg_mean`` and >= 100 from each other, so that
    two-colour textures stay visible. Falls back to the two corners of the RGB cube farthest
    from ``bg_mean`` (>= 180 from it, 255 from each other)."""

    def far_enough(c: np.ndarray) -> bool:
        d = c - bg_mean
        return bool(np.linalg.norm(d) >= min_contrast and abs(d @ _LUMA) >= min_luma_contrast)

    for _ in range(100):
        a, b = rng.uniform(0, 255, size=(2, 3))
        if far_enough(a) and far_enough(b) and np.linalg.norm(a - b) >= 100:
            return a, b
    corners = 255.0 * np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=np.float64)
    far = np.argsort(-np.linalg.norm(corners - bg_mean, axis=1), kind="stable")
    return corners[far[0]], corners[far[1]]
