"""QuantMimic shapes: a deterministic, seeded generator of a small COCO-format detection data set.

Every image is ``image_size x image_size`` RGB (written as PNG) and holds ``min_objects`` to
``max_objects`` objects of five classes that differ in both shape and texture:

========  ==========  ===========================================
class id  name        texture (colours are random per object)
========  ==========  ===========================================
1         circle      solid
2         square      stripes (random angle and period)
3         triangle    checkerboard
4         star        solid (five-pointed)
5         ring        linear gradient between two colours
========  ==========  ===========================================

Colour alone therefore never identifies a class. Backgrounds are a smooth random gradient with
low-frequency noise, plus clutter (thin lines, small blobs, scribbles) that is not annotated.
Objects may overlap: later objects are drawn on top; an annotation is dropped when more than
``max_hidden_fraction`` of its object is hidden, and every box is the tight box of the object's
*visible* pixels. All coordinates are in pixels, boxes are COCO ``[x, y, w, h]`` with ``x, y`` the
top-left corner of the top-left visible pixel and ``w, h`` counted in whole pixels (>= 1).

Layout written by :func:`generate_shapes_dataset` under ``<root>/quantmimic_shapes/``::

    train/000000.png ...            val/000000.png ...
    annotations/instances_train.json
    annotations/instances_val.json
    spec.json                        # the ShapesSpec, written last; marks a complete data set
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "DATASET_DIRNAME",
    "DEFAULT_SPEC",
    "SHAPE_CLASSES",
    "SHAPE_TEXTURES",
    "SPLITS",
    "ShapesSpec",
    "dataset_dir",
    "generate_shapes_dataset",
    "generate_split",
    "render_image",
    "visible_objects",
]

DATASET_DIRNAME = "quantmimic_shapes"
SHAPE_CLASSES: Tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")
SHAPE_TEXTURES: Tuple[str, ...] = ("solid", "striped", "checkered", "solid", "gradient")
SPLITS: Tuple[str, ...] = ("train", "val")

_SHIFT = 4  # sub-pixel bits for cv2 polygon/circle drawing
_SCALE = 1 << _SHIFT

Color = np.ndarray  # float32 array of shape (3,), RGB in [0, 255]


@dataclass(frozen=True)
class ShapesSpec:
    """Parameters of the shapes data set. Equal specs produce byte-identical data sets.

    Attributes:
        version: generator version; bump it whenever the drawing code changes the output.
        seed: master seed; train and val use different seeds derived from it.
        num_train, num_val: number of images per split.
        image_size: side of the square images, pixels.
        min_objects, max_objects: number of objects drawn per image (inclusive range).
        min_object_size, max_object_size: side of an object's bounding square, pixels.
        small_object_size: objects in ``[min_object_size, small_object_size)`` are "small".
        small_object_prob: probability that an object is small; the others are drawn
            log-uniformly from ``[small_object_size, max_object_size]``.
        clutter: mean number of clutter items (lines, blobs, scribbles) per image.
        max_overlap: at placement, a new object may hide at most this fraction of any earlier
            object (placement is retried, then the object is skipped).
        max_hidden_fraction: an annotation is dropped when more than this fraction of its
            object is hidden by later objects.
        min_contrast: minimum RGB distance between each object colour and the mean background
            colour under the object.
        min_luma_contrast: minimum luminance difference (grey levels, Rec. 601 weights) between
            each object colour and that mean background colour.
        noise_std: standard deviation of the per-pixel Gaussian noise added last, grey levels.
    """

    version: int = 1
    seed: int = 0
    num_train: int = 800
    num_val: int = 200
    image_size: int = 192
    min_objects: int = 2
    max_objects: int = 8
    min_object_size: int = 10
    max_object_size: int = 84
    small_object_size: int = 20
    small_object_prob: float = 0.15
    clutter: int = 6
    max_overlap: float = 0.45
    max_hidden_fraction: float = 0.6
    min_contrast: float = 90.0
    min_luma_contrast: float = 30.0
    noise_std: float = 3.0

    def __post_init__(self) -> None:
        if not 0 < self.min_object_size <= self.small_object_size <= self.max_object_size:
            raise ValueError("need 0 < min_object_size <= small_object_size <= max_object_size")
        if self.max_object_size > self.image_size:
            raise ValueError("max_object_size must not exceed image_size")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError("need 1 <= min_objects <= max_objects")
        if self.num_train < 0 or self.num_val < 0 or self.clutter < 0:
            raise ValueError("num_train, num_val and clutter must be >= 0")

    def to_dict(self) -> Dict[str, Any]:
        """The spec as a JSON-serialisable dict (field order as declared)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> ShapesSpec:
        """Inverse of :meth:`to_dict`; raises ``TypeError`` on unknown or missing keys."""
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            raise TypeError(f"spec keys {sorted(d)} do not match ShapesSpec fields {sorted(names)}")
        return cls(**d)

    def num_images(self, split: str) -> int:
        """Number of images of ``split`` ("train" or "val")."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.num_train if split == "train" else self.num_val


DEFAULT_SPEC = ShapesSpec()  # the built-in data set (quantmimic_shapes_train / _val)


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


_CLUTTER: Tuple[Callable[[np.ndarray, np.random.Generator], None], ...] = (
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


_MASKS: Dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "circle": circle_mask,
    "square": square_mask,
    "triangle": triangle_mask,
    "star": star_mask,
    "ring": ring_mask,
}
_TEXTURES: Dict[str, Callable[[int, Tuple[Color, Color], np.random.Generator], np.ndarray]] = {
    "solid": solid_texture,
    "striped": striped_texture,
    "checkered": checkered_texture,
    "gradient": gradient_texture,
}


_LUMA = np.array([0.299, 0.587, 0.114])


def _pick_colors(
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


# --------------------------------------------------------------------------------------------
# images and splits
# --------------------------------------------------------------------------------------------


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
        _CLUTTER[int(rng.integers(len(_CLUTTER)))](img, rng)
    bg = img.copy()

    masks: List[np.ndarray] = []  # full (size, size) bool mask of each placed object
    visible: List[np.ndarray] = []  # part of each mask not covered by later objects
    classes: List[int] = []
    for _ in range(int(rng.integers(spec.min_objects, spec.max_objects + 1))):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        s = _object_size(rng, spec)
        patch_mask = _MASKS[SHAPE_CLASSES[cls]](s, rng)
        for _attempt in range(20):
            x0, y0 = (int(v) for v in rng.integers(0, size - s + 1, size=2))
            full = np.zeros((size, size), bool)
            full[y0 : y0 + s, x0 : x0 + s] = patch_mask
            if all((vis & ~full).sum() >= (1 - spec.max_overlap) * m.sum() for m, vis in zip(masks, visible)):
                break
        else:
            continue  # no placement hides little enough of the earlier objects: skip this object
        bg_mean = bg[y0 : y0 + s, x0 : x0 + s][patch_mask].mean(axis=0)
        colors = _pick_colors(rng, bg_mean, spec.min_contrast, spec.min_luma_contrast)
        texture = _TEXTURES[SHAPE_TEXTURES[cls]](s, colors, rng)
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


def _split_rng(spec: ShapesSpec, split: str, index: int) -> np.random.Generator:
    """Independent generator for image ``index`` of ``split``; train and val seeds differ."""
    return np.random.default_rng(np.random.SeedSequence([spec.seed, SPLITS.index(split), index]))


def generate_split(out_dir: str | Path, split: str, spec: ShapesSpec) -> Dict[str, Any]:
    """Write the PNG images of ``split`` into ``out_dir/<split>/`` and return its COCO dict.

    Image ``i`` is ``<split>/{i:06d}.png`` with COCO image id ``i + 1``; annotation ids run from 1.
    """
    out = Path(out_dir) / split
    out.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(spec.num_images(split)):
        image, objects = render_image(_split_rng(spec, split, i), spec)
        file_name = f"{i:06d}.png"
        if not cv2.imwrite(str(out / file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {out / file_name}")
        images.append(
            {"id": i + 1, "file_name": file_name, "width": spec.image_size, "height": spec.image_size}
        )
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0, **obj})
    return {
        "info": {"description": "QuantMimic shapes", "version": str(spec.version), "split": split},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPE_CLASSES)
        ],
    }


def _spec_json(spec: ShapesSpec) -> str:
    return json.dumps(spec.to_dict(), indent=2) + "\n"


def _read_spec(path: Path) -> Dict[str, Any] | None:
    """The spec dict stored in ``path/spec.json``, or None if it is missing or unreadable."""
    try:
        with open(path / "spec.json", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def dataset_dir(root: str | Path) -> Path:
    """``<root>/quantmimic_shapes``: where :func:`generate_shapes_dataset` puts the data set."""
    return Path(root) / DATASET_DIRNAME


def generate_shapes_dataset(root: str | Path, spec: ShapesSpec = DEFAULT_SPEC) -> Path:
    """Generate the data set into ``<root>/quantmimic_shapes/`` unless it is already there.

    Cached: returns at once if ``spec.json`` there equals ``spec``; otherwise (re)generates. The
    data set is written into a temporary sibling directory and renamed into place, so the final
    path never holds a partial data set, and concurrent callers are safe: whoever finishes
    second keeps the finished data set if it has the same spec.

    Returns:
        the data set directory ``<root>/quantmimic_shapes``.
    """
    root = Path(root)
    final = dataset_dir(root)
    if _read_spec(final) == spec.to_dict():
        return final

    root.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = root / f".{DATASET_DIRNAME}.tmp-{tag}"
    try:
        (tmp / "annotations").mkdir(parents=True)
        for split in SPLITS:
            coco = generate_split(tmp, split, spec)
            with open(tmp / "annotations" / f"instances_{split}.json", "w", encoding="utf-8") as f:
                json.dump(coco, f, separators=(",", ":"))
        with open(tmp / "spec.json", "w", encoding="utf-8") as f:  # last: marks it complete
            f.write(_spec_json(spec))

        for _ in range(10):
            if _read_spec(final) == spec.to_dict():
                return final  # another process finished the same data set meanwhile
            try:
                os.rename(tmp, final)  # atomic; fails if `final` exists and is not empty
                return final
            except OSError:
                if not final.exists():
                    raise
            # `final` holds another spec (or a partial copy made by hand): move it aside, retry
            old = root / f".{DATASET_DIRNAME}.old-{tag}-{uuid.uuid4().hex[:4]}"
            try:
                os.rename(final, old)
            except FileNotFoundError:
                continue
            shutil.rmtree(old, ignore_errors=True)
        raise RuntimeError(f"could not move the generated data set into place at {final}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
