"""QuantMimic data: the built-in "QuantMimic shapes" detection data set, WIDER FACE and checked Pascal VOC.

Importing this package registers, under ``$DETECTRON2_DATASETS`` (default ``datasets``):
``quantmimic_shapes_train`` / ``quantmimic_shapes_val`` (the files are generated on first use),
``wider_face_train`` / ``wider_face_val``: the project's own names only (a name that is already registered
is left as it is). Registration reads nothing, so absent data sets are fine until they are used.
Replacing detectron2's ``voc_*`` loaders by the checked one is an explicit call,
``register_checked_voc(root)`` (``train_net.py`` makes it).
A data set of your own (COCO json + images, or a VOC folder) is registered by ``register_user_datasets``
(the ``--dataset`` option of the commands; ``user.py``), never on import.
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
from .user import (
    UserDataset,
    add_dataset_argument,
    check_user_dataset,
    configure_classes,
    parse_dataset_spec,
    register_user_datasets,
    write_example_datasets,
)
from .voc import load_voc_instances_checked, register_checked_voc
from .wider_face import load_wider_face, parse_wider_face_gt, register_wider_face

__all__ = [
    "MINI_SPEC",
    "DEFAULT_SPEC",
    "SHAPE_CLASSES",
    "SHAPE_COLORS",
    "SHAPE_TEXTURES",
    "SHAPES_DATASET_PREFIX",
    "ShapesSpec",
    "UserDataset",
    "add_dataset_argument",
    "check_user_dataset",
    "configure_classes",
    "default_datasets_root",
    "ensure_dataset_generated",
    "ensure_shapes_generated",
    "generate_shapes_dataset",
    "load_voc_instances_checked",
    "load_wider_face",
    "parse_dataset_spec",
    "parse_wider_face_gt",
    "register_checked_voc",
    "register_shapes_datasets",
    "register_user_datasets",
    "register_wider_face",
    "render_image",
    "write_example_datasets",
]

# A 64 + 32 image variant for smoke runs and tests (same generator, its own folder).
MINI_SPEC = ShapesSpec(num_train=64, num_val=32, num_test=16)

register_shapes_datasets()
register_shapes_datasets(
    root=os.path.join(default_datasets_root(), "quantmimic_shapes_mini"),
    spec=MINI_SPEC,
    prefix="quantmimic_shapes_mini",
)
register_wider_face(default_datasets_root())
# detectron2's own voc_* names keep detectron2's loader on import; train_net.py replaces it with the
# checked one by calling register_checked_voc explicitly.
