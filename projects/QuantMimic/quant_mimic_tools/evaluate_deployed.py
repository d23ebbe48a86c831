"""COCO box AP of a trained detector, eager against each way its deployed form runs, and (``--sweep``) AP
and latency of the deployed form over a grid of test-time settings.

    python -m quant_mimic_tools.evaluate_deployed \\
        --config-file projects/QuantMimic/configs/shapes/student_R18_16_FPN_scratch.yaml \\
        --weights output/shapes/student_scratch_seed0/model_final.pth [--device cuda] [--sweep] [--json F] \\
        [KEY VALUE ...]

On ``DATASETS.TEST[0]`` (the built-in val set unless overridden), with detectron2's COCOEvaluator:
detectron2's eager model, then its deployed form (``quant_mimic.deploy``, written to a temporary folder)
with the exact NMS, and on CUDA also under CUDA graphs with the static NMS, in float32 and float16. Prints
one line per run with its AP, AP50 and the difference to the eager AP (the deployed form's promise:
within 0.3 AP). tools/device_check.sh runs it on a GPU; on the CPU the test suite checks the same on the
mini data set. A QM checkpoint is evaluated as its student.

``--sweep``: then, for each test-time setting of a grid (RPN pre-NMS top-k per level / post-NMS top-k per
image / candidates before the final NMS / detections per image), the deployed form with that setting: its
AP and its median latency on one random image at each of ``--sizes``. The first row is the config's own
setting. This is the table that chose the tiny models' test-time settings in the configs
(docs/BENCHMARKS.md, "Test-time settings": ``--device cpu --threads 2``). Trailing ``KEY VALUE`` pairs
override the config (the grid's keys are then set over them).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

from .cli import add_model, add_overrides, make_parser, run, write_json

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


def coco_ap(module, cfg) -> dict:
    """COCO box metrics (``{"bbox": {"AP": ..., "AP50": ...}}``) of ``module`` (detectron2's model, or a
    ``DeployedPredictor.as_module()``) on ``cfg.DATASETS.TEST[0]``."""
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset

    dataset = cfg.DATASETS.TEST[0]
    loader = build_detection_test_loader(cfg, dataset)  # first: a generated data set is generated here
    with tempfile.TemporaryDirectory() as tmp:
        return inference_on_dataset(module, loader, COCOEvaluator(dataset, output_dir=tmp))


def deployed_runs(device: str) -> dict[str, dict]:
    """The ways the deployed form runs on ``device``: name -> ``DeployedPredictor`` options."""
    runs = {"deployed": {}}
    if device.startswith("cuda"):
        runs["deployed_cuda_graphs"] = {"cuda_graphs": True}
        runs["deployed_cuda_graphs_fp16"] = {"cuda_graphs": True, "half": True}
    return runs


def evaluate(args: argparse.Namespace) -> dict:
    """The AP of every run (and with ``args.sweep`` the grid's rows), printed and returned."""
    import torch

    import quant_mimic  # noqa: F401  (registers the project's models and data sets)
    from quant_mimic.checkpoint import trained_model
    from quant_mimic.config import build_config, deployed_config
    from quant_mimic.deploy import DeployedPredictor, export_deployed
    from quant_mimic.engine.checks import check_weights

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    weights = ["MODEL.WEIGHTS", args.weights] if args.weights else []
    device = ["MODEL.DEVICE", args.device] if args.device else []
    cfg = deployed_config(build_config(args.config_file, [*device, *args.opts, *weights]))
    check_weights(cfg.MODEL.WEIGHTS)
    model = trained_model(cfg)
    device, dataset = cfg.MODEL.DEVICE, cfg.DATASETS.TEST[0]
    results = {"eager": coco_ap(model, cfg)["bbox"]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_deployed(cfg, model, Path(tmp) / "deployed")
        for name, options in deployed_runs(device).items():
            predictor = DeployedPredictor(folder, device, optimize=args.optimize, **options)
            name = f"{name} ({predictor.backend})"
            results[name] = coco_ap(predictor.as_module(), cfg)["bbox"]
            results[name]["exact_reruns"] = predictor.exact_reruns
    eager = results["eager"]["AP"]
    print(f"{'run':<40}{'AP':>7}{'AP50':>7}{'AP - eager AP':>15}  ({dataset}, {device})")
    for name, m in results.items():
        print(f"{name:<40}{m['AP']:>7.2f}{m['AP50']:>7.2f}{m['AP'] - eager:>15.2f}")
    record = {"dataset": dataset, "device": device, "runs": results}
    if args.sweep:
        record["sweep"] = sweep(args, cfg, model)
    if args.json:
        write_json(args.json, record)
    return record


def sweep(args: argparse.Namespace, base, model) -> list[dict]:
    """AP and latency of ``model``'s deployed form at each test-time setting of the grid (``base``'s first)."""
    from quant_mimic.analysis import deployed_latency
    from quant_mimic.deploy import DeployedPredictor, export_deployed

    own = tuple(functools.reduce(getattr, key.split("."), base) for key in KEYS)
    sizes = " | ".join(f"{s} px ms" for s in args.sizes)
    print(f"| pre-NMS | post-NMS | candidates | detections | AP | AP50 | {sizes} |")
    print("|" + "---|" * (6 + len(args.sizes)))
    rows = []
    for setting in [own] + [g for g in DEFAULT_GRID if g != own]:
        cfg = base.clone()
        cfg.defrost()
        cfg.merge_from_list([v for pair in zip(KEYS, setting) for v in pair])
        with tempfile.TemporaryDirectory() as tmp:
            folder = export_deployed(cfg, model, Path(tmp) / "deployed")
            predictor = DeployedPredictor(folder, cfg.MODEL.DEVICE, optimize=args.optimize)
            metrics = coco_ap(predictor.as_module(), cfg)["bbox"]
            latency = {
                str(size): deployed_latency(predictor, size, size, repeats=args.repeats)["latency_ms"][
                    "total"
                ]
                for size in args.sizes
            }
        row = {"setting": dict(zip(KEYS, setting)), "AP": metrics["AP"], "AP50": metrics["AP50"],
               "latency_ms": latency}  # fmt: skip
        rows.append(row)
        cells = [
            *setting,
            f"{row['AP']:.1f}",
            f"{row['AP50']:.1f}",
            *(f"{latency[str(s)]:.1f}" for s in args.sizes),
        ]
        print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    return rows


def get_parser() -> argparse.ArgumentParser:
    parser = make_parser("evaluate_deployed", __doc__)
    add_model(parser, "the detector")
    parser.add_argument(
        "--device", help="where the models run: cpu, cuda or cuda:N (default: the config's MODEL.DEVICE, cuda "
        "where there is one)"
    )  # fmt: skip
    parser.add_argument(
        "--sweep", action="store_true", help="also AP and latency over the grid of test-time settings"
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[192, 600],
        metavar="PX",
        help="--sweep: latency image sizes (px)",
    )
    parser.add_argument("--repeats", type=int, default=20, help="--sweep: timed passes per size")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument(
        "--no-optimize",
        dest="optimize",
        action="store_false",
        help="no torch.jit.optimize_for_inference of the deployed TorchScript networks (CPU; default: optimized)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every AP (and the sweep's rows) to FILE")
    add_overrides(parser, "the detector's config")
    return parser


def main(argv: list[str] | None = None) -> None:
    run("evaluate_deployed", get_parser(), evaluate, argv)


if __name__ == "__main__":
    main()
