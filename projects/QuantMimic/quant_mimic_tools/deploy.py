"""Write the deployed form of a trained detector: folded, traced networks and batched inference.

    python -m quant_mimic_tools.deploy --config-file output/shapes/student_qm_seed0/student_config.yaml \\
        --output deployed/qm_student
    python -m quant_mimic_tools.deploy --config-file projects/QuantMimic/configs/qm_R_tiny_FPN.yaml \\
        --weights output/shapes/qm_R18_16_FPN/model_final.pth --output deployed/qm_student
    python -m quant_mimic_tools.deploy --config-file ... --output DIR MODEL.RPN.PRE_NMS_TOPK_TEST 100

Any detector of this project deploys: a student export, a QuantMimicRCNN checkpoint (its student), a
teacher. Config overrides (``KEY VALUE`` pairs) set the test-time settings that go into the folder. Load it
with ``quant_mimic.deploy.DeployedPredictor(DIR)``; ``demo.py --deployed DIR`` draws its detections.
An existing deployed folder is not replaced unless ``--force`` is given. The folder is written whole or not
at all (a temporary folder beside it, renamed into place), with ``manifest.json`` (each file's size and
sha256) that the runtime checks before loading; one deploy at a time writes a given ``--output``
(``.<name>.lock`` beside it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quant_mimic.data.user import add_dataset_argument
from quant_mimic.errors import QuantMimicInputError


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the detector's config")
    parser.add_argument("--weights", help="its checkpoint (default: the config's MODEL.WEIGHTS)")
    parser.add_argument("--output", required=True, metavar="DIR", help="the deployed folder to write")
    parser.add_argument("--force", action="store_true", help="replace an existing deployed folder")
    add_dataset_argument(parser)  # --dataset NAME=...: a user's data set, for its class names
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser


def deploy(args: argparse.Namespace) -> Path:
    """Check the inputs, then export; raises QuantMimicInputError with one sentence."""
    import quant_mimic  # noqa: F401  (registers the project's models)
    from quant_mimic.deploy.export import is_deployed_folder
    from quant_mimic.engine.run_lock import run_lock

    output = Path(args.output)
    # the lock file lies beside the folder, which is replaced whole by a rename
    with run_lock(output, "--output", lock_file=output.absolute().parent / f".{output.name}.lock"):
        if is_deployed_folder(output) and not args.force:
            raise QuantMimicInputError(
                f"{output} already holds a deployed model: pass --force to replace it."
            )
        return _deploy(args, output)


def _deploy(args: argparse.Namespace, output: Path) -> Path:
    from quant_mimic.config import build_config, resolve_config_path
    from quant_mimic.data.user import configure_classes, register_user_datasets
    from quant_mimic.deploy import build_and_export
    from quant_mimic.engine.setup import check_weights

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


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    try:
        folder = deploy(args)
    except QuantMimicInputError as e:
        print(f"deploy: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"deployed to {folder}")


if __name__ == "__main__":
    main()
