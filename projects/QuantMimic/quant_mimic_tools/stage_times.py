"""How long a setting's main job takes here: each stage's training step and test image, timed with its real
config at the data set's typical image size, and the chain's total from them.

    python -m quant_mimic_tools.stage_times --setting voc|voc_single|wider_face [--device cuda] \\
        [--warmup 10] [--iters 30] [--seeds 0 1 2] [--json F]

A training step is the one ``train_net.py`` takes (detectron2's losses, the mimic loss for mimic / QM, the
config's optimizer) on ``SOLVER.IMS_PER_BATCH`` random images of ``Setting.typical_image`` resized as
the config's INPUT says, with that many random boxes each; data loading is not timed (the configs load
with several workers). A test image is the deployed model's eager forward at the config's test size. The
total is sum over stages of ``SOLVER.MAX_ITER`` steps plus the evaluations (every ``TEST.EVAL_PERIOD``
and at the end, ``Setting.val_images`` images each), students once per seed of ``--seeds`` (the main job's
``--seeds``: only their number counts); the report's CPU cost table is not
included. Random weights: proposal and detection counts of trained models differ, so this is an estimate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .chains import CHAINS as SETTINGS
from .chains import SHAPES
from .chains import Chain as Setting
from .cli import add_seeds, make_parser

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def random_input(cfg, height: int, width: int, objects: int, generator: torch.Generator) -> dict:
    """A training input: uint8 Tensor[C, H, W] in INPUT.FORMAT's channel count, ``objects`` boxes of 20-200 px."""
    from detectron2.structures import Boxes, Instances

    from quant_mimic.timing import random_image

    channels = 1 if cfg.INPUT.FORMAT == "L" else 3
    seed = int(torch.randint(0, 2**31, (), generator=generator))
    image = random_image(height, width, channels, seed=seed).to(torch.uint8)
    instances = Instances((height, width))
    side = torch.tensor([max(width - 200, 1), max(height - 200, 1)])
    corner = torch.rand(objects, 2, generator=generator) * side
    size = 20 + torch.rand(objects, 2, generator=generator) * 180
    instances.gt_boxes = Boxes(torch.cat([corner, corner + size], 1))
    instances.gt_classes = torch.randint(0, cfg.MODEL.ROI_HEADS.NUM_CLASSES, (objects,), generator=generator)
    return {"image": image, "instances": instances, "height": height, "width": width}


def evaluations(max_iter: int, period: int) -> int:
    """How many times detectron2's EvalHook evaluates a run: every ``period`` iterations and after the last."""
    if period <= 0:
        return 1
    return max_iter // period + (1 if max_iter % period else 0)


def time_stage(setting: Setting, config: str, device: str, warmup: int, iters: int) -> dict:
    """Seconds per training step and per test image of ``config`` (random weights), and its schedule."""
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer
    from detectron2.utils.events import EventStorage

    from quant_mimic.config import build_config
    from quant_mimic.deploy.runtime import resized_shape
    from quant_mimic.timing import time_calls

    cfg = build_config(str(CONFIGS / config), ["MODEL.DEVICE", device, "MODEL.WEIGHTS", ""])
    height, width, objects = setting.typical_image
    train_size = resized_shape(height, width, cfg.INPUT.MIN_SIZE_TRAIN[0], cfg.INPUT.MAX_SIZE_TRAIN)
    test_size = resized_shape(height, width, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    torch.manual_seed(0)
    model = build_model(cfg)
    qm = cfg.MODEL.META_ARCHITECTURE == "QuantMimicRCNN"
    optimizer = build_optimizer(cfg, model)
    generator = torch.Generator().manual_seed(0)
    batch = [random_input(cfg, *train_size, objects, generator) for _ in range(cfg.SOLVER.IMS_PER_BATCH)]
    model.train()

    def step():
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with EventStorage(0):
        train = time_calls(lambda lap: step(), iters, warmup, device).median_s()
    detector = model.student if qm else model
    detector.eval()
    image = random_input(cfg, *test_size, 0, generator)
    del image["instances"]
    with torch.no_grad():
        test = time_calls(lambda lap: detector([image]), iters, warmup, device).median_s()
    n_evals = evaluations(cfg.SOLVER.MAX_ITER, cfg.TEST.EVAL_PERIOD)
    return {
        "config": config,
        "s_per_iter": round(train, 4),
        "s_per_test_image": round(test, 4),
        "max_iter": cfg.SOLVER.MAX_ITER,
        "evaluations": n_evals,
        "train_size": list(train_size),
        "test_size": list(test_size),
        "hours": round((cfg.SOLVER.MAX_ITER * train + n_evals * setting.val_images * test) / 3600, 2),
    }


def get_parser() -> argparse.ArgumentParser:
    parser = make_parser("stage_times", __doc__)
    parser.add_argument(
        "--setting",
        required=True,
        choices=sorted(set(SETTINGS) - {SHAPES.name}),
        help="the main job's chain whose stages are timed",
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where the steps run (default: cuda when available, else cpu)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--iters", type=int, default=20, help="timed steps")
    add_seeds(parser, "the main job's student seeds: one student per kind and seed")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the numbers to FILE")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = get_parser().parse_args(argv)
    args.seeds = len(args.seeds)  # what the estimate needs: students per kind
    import quant_mimic  # noqa: F401  (registers the project's models)

    setting = SETTINGS[args.setting]
    rows = [time_stage(setting, s.config, args.device, args.warmup, args.iters) for s in setting.stages()]
    for row in rows[2:]:
        row["hours"] = round(row["hours"] * args.seeds, 2)
    total = round(sum(r["hours"] for r in rows), 2)
    device = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(f"{setting.title} on {device}, {args.seeds} seed(s):")
    print("| config | s / iteration | s / test image | iterations | evaluations | hours |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['s_per_iter']:.3f} | {r['s_per_test_image']:.3f} | {r['max_iter']} | "
              f"{r['evaluations']} | {r['hours']:.1f} |")  # fmt: skip
    print(
        f"Estimated main job: {total:.1f} h (training and evaluation; data loading and the report not included)."
    )
    result = {"setting": setting.name, "device": device, "seeds": args.seeds, "stages": rows, "hours": total}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
