#!/usr/bin/env python
"""Train or evaluate a QuantMimic model (teacher, student, or Quantization Mimic).

    python projects/QuantMimic/train_net.py --config-file projects/QuantMimic/configs/shapes/teacher_R18_FPN.yaml
    python projects/QuantMimic/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python projects/QuantMimic/train_net.py --config-file ... --num-gpus 2 SOLVER.IMS_PER_BATCH 8

The mimic loss is added by the trainer's step: quant_mimic/engine/trainer.py.
"""

from __future__ import annotations

import sys

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup, launch

import quant_mimic  # noqa: F401  (registers the project's models, backbones and data sets)
from quant_mimic.engine import Trainer, build_config, check_run_inputs
from quant_mimic.errors import QuantMimicInputError


def setup(args) -> CfgNode:
    cfg = build_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv: list[str] | None = None) -> None:
    args = default_argument_parser().parse_args(argv)
    try:  # check the inputs once, before any worker starts, so a mistake reads as one sentence
        check_run_inputs(build_config(args.config_file, args.opts), args.resume, args.eval_only)
    except QuantMimicInputError as e:
        print(f"train_net.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
