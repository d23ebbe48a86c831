"""Write the deployed form of a trained detector: folded, traced networks and batched inference.

    python -m quant_mimic_tools.deploy --config-file output/shapes/student_qm_seed0/student_config.yaml \\
        --output-dir deployed/qm_student
    python -m quant_mimic_tools.deploy --config-file projects/QuantMimic/configs/qm_R_tiny_FPN.yaml \\
        --weights output/shapes/qm_R18_16_FPN/model_final.pth --output-dir deployed/qm_student
    python -m quant_mimic_tools.deploy --config-file ... --output-dir DIR MODEL.RPN.PRE_NMS_TOPK_TEST 100

Any detector of this project deploys: a student export, a QuantMimicRCNN checkpoint (its student), a
teacher. Config overrides (``KEY VALUE`` pairs) set the test-time settings that go into the folder. Load it
with ``quant_mimic.deploy.DeployedPredictor(DIR)``; ``demo.py --deployed DIR`` draws its detections.
An existing deployed folder is not replaced unless ``--force`` is given. The folder is written whole or not
at all (a temporary folder beside it, renamed into place), with ``manifest.json`` (each file's size and
sha256) that the runtime checks before loading; one deploy at a time writes a given ``--output-dir``
(``.<name>.lock`` beside it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from quant_mimic.data.user import add_dataset_argument
from quant_mimic.errors import QuantMimicInputError

from .cli import add_model, add_overrides, make_parser, run


def get_parser() -> argparse.ArgumentParser:
    parser = make_parser("deploy", __doc__)
    add_model(parser, "the detector")
    parser.add_argument(
        "--output-dir", required=True, dest="output", metavar="DIR", help="the deployed folder to write"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing deployed folder")
    add_dataset_argument(parser)  # --dataset NAME=...: a user's data set, for its class names
    add_overrides(parser, "the detector's config (the test-time settings that go into the folder)")
    return parser


def deploy(args: argparse.Namespace) -> Path:
    """Check the inputs, then export; raises QuantMimicInputError with one sentence."""
    import quant_mimic  # noqa: F401  (registers the project's models)
    from quant_mimic.deploy.export import is_deployed_folder
    from quant_mimic.engine.run_lock import run_lock

    output = Path(args.output)
    # the lock file lies beside the folder, which is replaced whole by a rename
    with run_lock(output, "--output-dir", lock_file=output.absolute().parent / f".{output.name}.lock"):
        if is_deployed_folder(output) and not args.force:
            raise QuantMimicInputError(
                f"{output} already holds a deployed model: pass --force to replace it."
            )
        return _deploy(args, output)


def _deploy(args: argparse.Namespace, output: Path) -> Path:
    from quant_mimic.config import build_config, resolve_config_path
    from quant_mimic.data.user import configure_classes, register_user_datasets
    from quant_mimic.deploy import build_and_export
    from quant_mimic.engine.checks import check_weights

    opts = list(args.opts) + (["MODEL.WEIGHTS", args.weights] if args.weights else [])
    datasets = register_user_datasets(args.dataset)
    cfg = build_config(args.config_file, opts + ["MODEL.DEVICE", "cpu"])
    configure_classes(cfg, opts, datasets)
    cfg.defrost()
    if not cfg.MODEL.WEIGHTS:
        raise QuantMimicInputError(
            "No weights: pass --weights output/.../model_final.pth (or a student export)."
        )
    cfg.MODEL.WEIGHTS = resolve_config_path(cfg.MODEL.WEIGHTS, args.config_file)
    check_weights(cfg.MODEL.WEIGHTS)
    return build_and_export(cfg, output)


def _main(args: argparse.Namespace) -> None:
    print(f"deployed to {deploy(args)}")


def main(argv: list[str] | None = None) -> None:
    run("deploy", get_parser(), _main, argv)


if __name__ == "__main__":
    main()
