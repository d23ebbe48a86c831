"""The parameters and classes of the QuantMimic shapes data set.

Five classes that differ in both shape and texture:

========  ==========  ===========================================
class id  name        texture (colours are random per object)
========  ==========  ===========================================
1         circle      solid
2         square      stripes (random angle and period)
3         triangle    checkerboard
4         star        solid (five-pointed)
5         ring        linear gradient between two colours
========  ==========  ===========================================

Colour alone therefore never identifies a class. :class:`ShapesSpec` holds every parameter of the
generator; equal specs produce byte-identical data sets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Tuple

__all__ = ["DEFAULT_SPEC", "SHAPE_CLASSES", "SHAPE_TEXTURES", "SPLITS", "ShapesSpec"]

SHAPE_CLASSES: Tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")  # class id k + 1 is index k
SHAPE_TEXTURES: Tuple[str, ...] = ("solid", "striped", "checkered", "solid", "gradient")  # per class
SPLITS: Tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class ShapesSpec:
    """Parameters of the shapes data set. Equal specs produce byte-identical data sets.

    Attributes:
        version: generator version; bump it whenever the drawing code changes the output.
        seed: master seed; train, val and test use different seeds derived from it.
        num_train, num_val, num_test: number of images per split. Choices (settings, strides,
            which iteration) are made on val; test is read once per final model.
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
    num_test: int = 1000
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
        if min(self.num_train, self.num_val, self.num_test, self.clutter) < 0:
            raise ValueError("num_train, num_val, num_test and clutter must be >= 0")

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
        """Number of images of ``split`` ("train", "val" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]


DEFAULT_SPEC = ShapesSpec()  # the built-in data set (quantmimic_shapes_train / _val / _test)
