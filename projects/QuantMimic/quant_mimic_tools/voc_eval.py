"""The Pascal VOC evaluation of per-class detection files: the AP50 of every class beside the mean.

    python -m quant_mimic_tools.voc_eval --pred output/voc/inference/voc_2007_test \\
        --voc datasets/VOC2007 --split test [--classes aeroplane,bicycle,...] [--metric 07|area] [--json FILE]

``--pred``: the devkit's result files, one per class, ``<class>.txt`` or ``<prefix>_<class>.txt`` (e.g.
``comp4_det_test_car.txt``), each line ``image_id score xmin ymin xmax ymax`` (1-based pixel corners), as
``quant_mimic.evaluation.PascalVOCPerClassEvaluator`` writes them with an ``output_dir``. ``--voc``: the VOC
folder (``Annotations/``, ``ImageSets/Main/<split>.txt``). Classes: ``--classes``, else the sorted names in
the split's annotations (the 20 VOC classes, in detectron2's order, for VOC itself). Metric: the VOC2007
11-point AP for a folder named VOC2007, else the area under the curve (``--metric`` chooses).

The computation is detectron2's ``voc_eval`` (the evaluator of ``evaluator_type: pascal_voc``): ``difficult``
objects ignored, AP50 per class, and AP (mean over IoU .50:.95), AP50 and AP75 over the classes. Prints a
table and writes it to ``--json`` (default ``<pred>/voc_eval.json``).
"""

from __future__ import annotations

import argparse
import os
import sys

from .cli import make_parser, run, write_json

PROG = "voc_eval"


def _finite(x: float) -> float | None:
    """AP in percent rounded to 4 decimals; None (null in the JSON) for a class without objects."""
    return round(x, 4) if x == x else None


def get_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, __doc__)
    parser.add_argument("--pred", required=True, metavar="DIR", help="folder of per-class detection files")
    parser.add_argument(
        "--voc", required=True, metavar="DIR", help="VOC folder: Annotations/, ImageSets/Main/"
    )
    parser.add_argument(
        "--split",
        default="test",
        metavar="SPLIT",
        help="the image set evaluated (ImageSets/Main/<split>.txt)",
    )
    parser.add_argument(
        "--classes",
        metavar="A,B,...",
        help="class names, comma separated (default: read from the annotations)",
    )
    parser.add_argument(
        "--metric", choices=("07", "area"), help="07: 11-point AP; area: area under the curve"
    )
    parser.add_argument(
        "--json", metavar="FILE", help="where to write the result (default <pred>/voc_eval.json)"
    )
    return parser


def evaluate(args: argparse.Namespace) -> dict:
    """Check, evaluate, print, write; raises QuantMimicInputError with one sentence."""
    from quant_mimic.data.user import voc_class_names
    from quant_mimic.data.voc import load_voc_instances_checked
    from quant_mimic.errors import QuantMimicInputError
    from quant_mimic.evaluation.pascal_voc import evaluate_voc_detection_files, format_per_class_table

    if not os.path.isdir(args.pred):
        raise QuantMimicInputError(f"--pred {args.pred} is not a folder: pass the folder of per-class files.")
    if not os.path.isdir(args.voc):
        raise QuantMimicInputError(
            f"--voc {args.voc} is not a folder: pass the VOC folder (e.g. datasets/VOC2007)."
        )
    found = voc_class_names(args.voc, args.split)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else found
    if not classes:
        raise QuantMimicInputError(
            f"The annotations of {args.voc} split {args.split} name no class: pass --classes."
        )
    # every XML file has what the evaluation reads (difficult, truncated, pose, integer corners)
    load_voc_instances_checked(
        args.voc, args.split, sorted(set(found) | set(classes)), check_eval_fields=True
    )
    folder = os.path.basename(os.path.normpath(args.voc))
    use_07 = args.metric == "07" if args.metric else folder == "VOC2007"
    metric = "VOC2007 11-point" if use_07 else "VOC2010+ area-under-curve"
    result, counts, missing = evaluate_voc_detection_files(args.pred, args.voc, args.split, classes, use_07)
    if missing:
        print(
            f"{PROG}: no detection file for {len(missing)} class(es) ({', '.join(missing)}): they have no detections.",
            file=sys.stderr,
        )
    print(
        format_per_class_table(
            result, f"Pascal VOC AP50 per class, {args.voc} split {args.split} ({metric} AP):"
        )
    )
    out = {
        "per_class_AP50": {k[len("AP50-") :]: _finite(v) for k, v in result.items() if k.startswith("AP50-")},
        **{k: _finite(result[k]) for k in ("AP", "AP50", "AP75")},
        "detections": counts,
        "metric": "07" if use_07 else "area",
        "pred": os.path.abspath(args.pred),
        "voc": os.path.abspath(args.voc),
        "split": args.split,
    }
    path = args.json or os.path.join(args.pred, "voc_eval.json")
    write_json(path, out)
    return out


def main(argv: list[str] | None = None) -> None:
    run(PROG, get_parser(), evaluate, argv)


if __name__ == "__main__":
    main()
