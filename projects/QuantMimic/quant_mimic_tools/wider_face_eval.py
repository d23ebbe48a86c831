"""The WIDER FACE val evaluation of prediction files, as the official tool runs it: Easy / Medium / Hard AP.

    python -m quant_mimic_tools.wider_face_eval --pred output/wider/inference/wider_face_val \\
        --gt datasets/WIDER_FACE/eval_tools/ground_truth [--json FILE]

``--pred``: one sub-folder per event, one ``<image>.txt`` per val image in the official format (image name,
number of detections, ``x y w h score`` lines), as the official MATLAB / Python tools read and as
``WiderFaceEvaluator`` writes into ``<OUTPUT_DIR>/inference/wider_face_val/``. ``--gt``: the folder of
``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` (``eval_tools/ground_truth`` of the release).
The protocol is ``quant_mimic.evaluation.wider_face`` (the official ``wider_eval.m``: global score
normalisation, IoU 0.5, 1000 thresholds, faces outside a setting's list ignored); images without a
prediction file count as images without detections. Prints the three APs (in [0, 1], as the official tool)
and writes them with the counts to ``--json`` (default ``<pred>/wider_face_eval.json``).
"""

from __future__ import annotations

import argparse
import os
import sys

from .cli import make_parser, run, write_json

PROG = "wider_face_eval"


def get_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, __doc__)
    parser.add_argument("--pred", required=True, metavar="DIR", help="prediction folder: <event>/<image>.txt")
    parser.add_argument(
        "--gt", required=True, metavar="DIR", help="wider_face_val.mat and wider_{easy,medium,hard}_val.mat"
    )
    parser.add_argument(
        "--json", metavar="FILE", help="where to write the APs (default <pred>/wider_face_eval.json)"
    )
    parser.add_argument("--iou", type=float, default=0.5, help="IoU of a match (official: 0.5)")
    return parser


def evaluate(args: argparse.Namespace) -> dict:
    """Read, evaluate, print, write; raises QuantMimicInputError with one sentence."""
    from quant_mimic.evaluation.wider_face import WIDER_SETTINGS, evaluate_wider_face, load_wider_face_gt
    from quant_mimic.evaluation.wider_face_files import read_wider_face_predictions

    gt = load_wider_face_gt(args.gt)
    preds = read_wider_face_predictions(args.pred, gt)
    n_images = sum(len(f) for f in gt.files)
    if preds.missing:
        print(
            f"{PROG}: {len(preds.missing)} of the {n_images} ground-truth images have no prediction file (no "
            f"detections there), e.g. {preds.missing[0]}.txt",
            file=sys.stderr,
        )
    if preds.unknown:
        print(
            f"{PROG}: {len(preds.unknown)} prediction file(s) are of no ground-truth image and are left out, "
            f"e.g. {preds.unknown[0]}",
            file=sys.stderr,
        )
    aps = evaluate_wider_face(preds.boxes, gt, iou_thresh=args.iou)
    print("==================== Results ====================")
    for setting in WIDER_SETTINGS:
        print(f"{setting.capitalize():<6} Val AP: {aps[setting]:.4f}")
    print("=================================================")
    result = {
        **{s: (aps[s] if aps[s] == aps[s] else None) for s in WIDER_SETTINGS},  # NaN: no face counts
        "pred": os.path.abspath(args.pred),
        "gt": os.path.abspath(args.gt),
        "images": n_images,
        "images_without_predictions": len(preds.missing),
        "iou": args.iou,
    }
    path = args.json or os.path.join(args.pred, "wider_face_eval.json")
    write_json(path, result)
    return result


def main(argv: list[str] | None = None) -> None:
    run(PROG, get_parser(), evaluate, argv)


if __name__ == "__main__":
    main()
