"""AP against latency of a trained detector's deployed form over a grid of test-time settings.

    python -m quant_mimic_tools.settings_sweep --config-file output/shapes/student_R18_16_FPN_scratch/config.yaml \\
        --weights output/shapes/student_R18_16_FPN_scratch/model_final.pth [--sizes 192 600] [--json F] [KEY VALUE ...]

For each setting (RPN pre-NMS top-k per level / post-NMS top-k per image / candidates before the final
NMS / detections per image), the deployed model is written to a temporary folder, its COCO box AP is
measured on DATASETS.TEST[0] with detectron2's COCOEvaluator, and its median latency on one random image
at each of ``--sizes`` (CPU, ``--threads`` threads). The first row is the config's own setting. This is
the table that chose the tiny models' test-time settings in the configs (README, "Deployment").
Trailing ``KEY VALUE`` pairs override the config (the grid's keys are then set over them).
"""

from __future__ import annotations

import argparse
import json
import tempfile

from .cli import add_overrides, make_parser, run

# (pre-NMS top-k per level, post-NMS top-k, candidates per image, detections per image)
DEFAULT_GRID = [
    (1000, 1000, 100000, 100),
    (500, 300, 1000, 100),
    (200, 100, 1000, 100),
    (100, 100, 300, 100),
    (100, 50, 200, 50),
    (50, 50, 100, 50),
    (50, 25, 100, 25),
    (25, 25, 50, 25),
]
KEYS = (
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "MODEL.DEPLOY.CANDIDATES_PER_IMAGE",
    "TEST.DETECTIONS_PER_IMAGE",
)


def evaluate(predictor, cfg) -> dict:
    """COCO box metrics of a deployed predictor on ``cfg.DATASETS.TEST[0]``."""
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset

    dataset = cfg.DATASETS.TEST[0]
    loader = build_detection_test_loader(cfg, dataset)  # first: a generated data set is generated here
    with tempfile.TemporaryDirectory() as tmp:
        evaluator = COCOEvaluator(dataset, output_dir=tmp)
        return inference_on_dataset(predictor.as_module(), loader, evaluator)


def sweep(args: argparse.Namespace) -> list[dict]:
    import torch

    import quant_mimic  # noqa: F401  (registers the project's models and data sets)
    from quant_mimic.analysis import deployed_latency
    from quant_mimic.config import build_config
    from quant_mimic.deploy import DeployedPredictor, build_and_export
    from quant_mimic.engine.checks import check_weights

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    base = build_config(args.config_file, [*args.opts, "MODEL.WEIGHTS", args.weights, "MODEL.DEVICE", "cpu"])
    check_weights(base.MODEL.WEIGHTS)
    own = (
        base.MODEL.RPN.PRE_NMS_TOPK_TEST,
        base.MODEL.RPN.POST_NMS_TOPK_TEST,
        base.MODEL.DEPLOY.CANDIDATES_PER_IMAGE,
        base.TEST.DETECTIONS_PER_IMAGE,
    )
    rows = []
    for setting in [own] + [g for g in DEFAULT_GRID if g != own]:
        cfg = base.clone()
        cfg.defrost()
        cfg.merge_from_list([v for pair in zip(KEYS, setting) for v in pair])
        with tempfile.TemporaryDirectory() as tmp:
            predictor = DeployedPredictor(build_and_export(cfg, tmp), optimize=args.optimize)
            metrics = evaluate(predictor, cfg)["bbox"]
            latency = {
                str(size): deployed_latency(predictor, size, size, repeats=args.repeats)["latency_ms"][
                    "total"
                ]
                for size in args.sizes
            }
        row = {
            "setting": dict(zip(KEYS, setting)),
            "AP": metrics["AP"],
            "AP50": metrics["AP50"],
            "latency_ms": latency,
        }
        rows.append(row)
        print(format_row(row, args.sizes), flush=True)
    return rows


def format_row(row: dict, sizes) -> str:
    s = row["setting"]
    cells = [s[k] for k in KEYS] + [f"{row['AP']:.1f}", f"{row['AP50']:.1f}"]
    cells += [f"{row['latency_ms'][str(size)]:.1f}" for size in sizes]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def get_parser() -> argparse.ArgumentParser:
    parser = make_parser("settings_sweep", __doc__)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the detector's config")
    parser.add_argument("--weights", required=True, metavar="FILE", help="its trained checkpoint")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[192, 600], metavar="PX", help="latency image sizes (px)"
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed passes per size")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument(
        "--no-optimize",
        dest="optimize",
        action="store_false",
        help="no torch.jit.optimize_for_inference of the deployed networks",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the rows to FILE")
    add_overrides(parser, "the detector's config")
    return parser


def _main(args: argparse.Namespace) -> None:
    header = "| pre-NMS | post-NMS | candidates | detections | AP | AP50 | " + " | ".join(
        f"{s} px ms" for s in args.sizes
    )
    print(header + " |")
    print("|" + "---|" * (6 + len(args.sizes)))
    rows = sweep(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def main(argv: list[str] | None = None) -> None:
    run("settings_sweep", get_parser(), _main, argv)


if __name__ == "__main__":
    main()
