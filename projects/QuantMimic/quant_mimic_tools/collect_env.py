"""Report the software QuantMimic runs on: ``python -m quant_mimic_tools.collect_env [--short]``.

Prints torch / torchvision / detectron2 versions, where detectron2 came from, and which of
detectron2's compiled-only features are missing in this build.
"""

from __future__ import annotations

import importlib
import os
import sys

# detectron2 features that exist only when its C++/CUDA extension (detectron2._C) is compiled.
COMPILED_FEATURES = {
    "deformable convolution": "detectron2.layers.DeformConv",
    "rotated box IoU / NMS": "detectron2.layers.pairwise_iou_rotated",
    "rotated ROIAlign": "detectron2.layers.ROIAlignRotated",
    "fast COCO evaluator (falls back to pycocotools' COCOeval)": "detectron2.evaluation.fast_eval_api",
}


def detectron2_source() -> str:
    """Where the importable detectron2 came from, in words."""
    import detectron2

    try:
        from detectron2._missing_ops import BUILD

        return f"pure-Python build of PyPI {BUILD} (no compiled ops)"
    except ImportError:
        pass
    try:
        importlib.import_module("detectron2._C")
        return f"compiled build at {os.path.dirname(detectron2.__file__)}"
    except ImportError:
        return f"build without compiled ops at {os.path.dirname(detectron2.__file__)}"


def missing_compiled_ops() -> list[str]:
    """Names of the features in COMPILED_FEATURES this detectron2 cannot run."""
    try:
        importlib.import_module("detectron2._C")
        return []
    except ImportError:
        return list(COMPILED_FEATURES)


def collect_env_info(short: bool = False) -> str:
    import detectron2
    import torch
    import torchvision

    lines = [
        f"python        {sys.version.split()[0]}",
        f"torch         {torch.__version__} (CUDA available: {torch.cuda.is_available()})",
        f"torchvision   {torchvision.__version__}",
        f"detectron2    {detectron2.__version__}: {detectron2_source()}",
    ]
    missing = missing_compiled_ops()
    lines.append("missing ops   " + (", ".join(missing) if missing else "none"))
    if not short:
        import cv2
        import fvcore
        import pycocotools

        from quant_mimic import __version__

        lines += [
            f"fvcore        {getattr(fvcore, '__version__', 'unknown')}",
            f"pycocotools   {getattr(pycocotools, '__version__', 'installed')}",
            f"opencv        {cv2.__version__}",
            f"quant_mimic   {__version__}",
            f"CPU threads   {torch.get_num_threads()}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from .cli import make_parser, run

    parser = make_parser("collect_env", __doc__)
    parser.add_argument("--short", action="store_true", help="versions and missing ops only")
    run("collect_env", parser, lambda args: print(collect_env_info(short=args.short)), argv)


if __name__ == "__main__":
    main()
