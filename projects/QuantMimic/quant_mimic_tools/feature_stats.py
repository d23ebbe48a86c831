"""How much a quantizer stride destroys of a trained model's features: the measurement behind the
default stride (``MODEL.QUANTIZER.STRIDE``).

    python -m quant_mimic_tools.feature_stats --config-file configs/shapes/teacher_R18_FPN.yaml \\
        --weights output/shapes/teacher_R18_FPN/model_final.pth [--images 16] [--json F] [KEY VALUE ...]

For every backbone output level it prints statistics of ReLU(feature) on validation images, and for
each candidate stride s the share of positive activations that Q sends to 0 and the relative L2
error ||Q(relu f) - relu f|| / ||relu f||. ``--json FILE`` also writes them, per level.
"""

from __future__ import annotations

import argparse

import torch

from .cli import add_model, add_overrides, make_parser, run, write_json

STRIDES = (0.0625, 0.125, 0.25, 0.5, 1.0)


@torch.no_grad()
def feature_stats(model, inputs: list[dict], strides=STRIDES) -> dict[str, dict]:
    """{level: {"mean", "p50", "p99", "positive", "zeroed@s", "rel_err@s" ...}} of ReLU'd features."""
    from quant_mimic.modeling.quantizer import quantize

    images = model.preprocess_image(inputs)
    features = model.backbone(images.tensor)
    stats = {}
    for name, f in features.items():
        r = torch.relu(f).flatten()
        pos = r[r > 0]
        row = {
            "mean": r.mean().item(),
            "positive": (r > 0).float().mean().item(),
            "p50": pos.median().item() if pos.numel() else 0.0,
            "p99": pos.quantile(0.99).item() if pos.numel() else 0.0,
        }
        for s in strides:
            q = quantize(r, s)
            row[f"zeroed@{s}"] = ((q == 0) & (r > 0)).float().sum().item() / max(pos.numel(), 1)
            row[f"rel_err@{s}"] = ((q - r).norm() / r.norm().clamp(min=1e-12)).item()
        stats[name] = row
    return stats


def get_parser() -> argparse.ArgumentParser:
    parser = make_parser("feature_stats", __doc__)
    add_model(parser, "the trained model")
    parser.add_argument(
        "--images", type=int, default=16, help="validation images (DATASETS.TEST[0]) measured"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the statistics per level to FILE")
    add_overrides(parser, "the model's config")
    return parser


def _main(args: argparse.Namespace) -> None:
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.modeling import build_model

    import quant_mimic  # noqa: F401
    from quant_mimic.config import build_config
    from quant_mimic.engine.checks import check_weights

    opts = list(args.opts) + (["MODEL.WEIGHTS", args.weights] if args.weights else [])
    cfg = build_config(args.config_file, opts)
    check_weights(cfg.MODEL.WEIGHTS)
    cfg.defrost()
    cfg.MODEL.QUANTIZER.ENABLED = False  # measure the full-precision features
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    mapper = DatasetMapper(cfg, is_train=False)
    inputs = [mapper(d) for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[: args.images]]
    stats = feature_stats(model, inputs)
    head = f"{'level':<6}{'mean':>8}{'pos':>7}{'p50':>8}{'p99':>8}"
    head += "".join(f"{'zero@' + str(s):>11}" for s in STRIDES) + "".join(
        f"{'err@' + str(s):>11}" for s in STRIDES
    )
    print(head)
    for name, row in stats.items():
        line = f"{name:<6}{row['mean']:>8.3f}{row['positive']:>7.2f}{row['p50']:>8.3f}{row['p99']:>8.3f}"
        line += "".join(f"{row[f'zeroed@{s}']:>11.2f}" for s in STRIDES)
        line += "".join(f"{row[f'rel_err@{s}']:>11.2f}" for s in STRIDES)
        print(line)
    if args.json:
        write_json(args.json, stats)


def main(argv: list[str] | None = None) -> None:
    run("feature_stats", get_parser(), _main, argv)


if __name__ == "__main__":
    main()
