"""QuantMimic data: the built-in "QuantMimic shapes" detection data set.

Importing this package registers ``quantmimic_shapes_train`` / ``quantmimic_shapes_val`` under
``$DETECTRON2_DATASETS`` (default ``datasets``); the files are generated on first use.
"""

import os

from .builtin import (
    SHAPE_COLORS,
    SHAPES_DATASET_PREFIX,
    default_datasets_root,
    ensure_dataset_generated,
    ensure_shapes_generated,
    register_shapes_datasets,
)
from .shapes import (
    DEFAULT_SPEC,
    SHAPE_CLASSES,
    SHAPE_TEXTURES,
    ShapesSpec,
    generate_shapes_dataset,
    render_image,
)

__all__ = [
    "MINI_SPEC",
    "DEFAULT_SPEC",
    "SHAPE_CLASSES",
    "SHAPE_COLORS",
    "SHAPE_TEXTURES",
    "SHAPES_DATASET_PREFIX",
    "ShapesSpec",
    "default_datasets_root",
    "ensure_dataset_generated",
    "ensure_shapes_generated",
    "generate_shapes_dataset",
    "register_shapes_datasets",
    "render_image",
]

# A 64 + 32 image variant for smoke runs and tests (same generator, its own folder).
MINI_SPEC = ShapesSpec(num_train=64, num_val=32)

register_shapes_datasets()
register_shapes_datasets(
    root=os.path.join(default_datasets_root(), "quantmimic_shapes_mini"),
    spec=MINI_SPEC,
    prefix="quantmimic_shapes_mini",
)
