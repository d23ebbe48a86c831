"""QuantMimic data: the built-in "QuantMimic shapes" detection data set.

Importing this package registers ``quantmimic_shapes_train`` / ``quantmimic_shapes_val`` under
``$DETECTRON2_DATASETS`` (default ``datasets``); the files are generated on first use.
"""

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

register_shapes_datasets()
