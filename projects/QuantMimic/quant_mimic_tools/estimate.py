"""How long a main-job chain takes on this machine (``pipeline --estimate``): each stage's training step
and test image, timed with its real config at the data set's typical image size, and the chain's hours.

A training step is the trainer's own (``quant_mimic.engine.Trainer``: detectron2's ``run_step``, AMP where
the config asks for it, a QM model's mimic loss, the hooks' ``before_step`` / ``after_step``) on
``SOLVER.IMS_PER_BATCH`` random images of ``Chain.typical_image`` resized as the config's INPUT says,
with that many random boxes each; data loading is not timed (the configs load with several workers). A
test image is the model's eager inference at the config's test size. The total is, over the stages,
``SOLVER.MAX_ITER`` steps plus the evaluations (every ``TEST.EVAL_PERIOD`` and at the end,
``Chain.val_images`` images each), the students once per seed; the report's CPU cost table is not
included. Random weights: proposal and detection counts of trained models differ, so this is an estimate.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import warnings
from pathlib import Path

import torch

from .chains import Chain
from .runner import CONFIGS

# what the estimate's trainer changes in a stage's config: no evaluation, checkpoint or end of schedule
# while it is timed, and no data workers (its batches are made here)
_TIMED_RUN = ["TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "1000000000", "SOLVER.MAX_ITER", "1000000000",
              "DATALOADER.NUM_WORKERS", "0", "MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES", "0"]  # fmt: skip


def random_input(cfg, height: int, width: int, objects: int, generator: torch.Generator) -> dict:
    """A training input: uint8 Tensor[C, H, W] in INPUT.FORMAT's channel count, ``objects`` boxes of 20 px
    up to 200 px (at most the image's shorter side)."""
    from detectron2.structures import Boxes, Instances

    from quant_mimic.timing import random_image

    channels = 1 if cfg.INPUT.FORMAT == "L" else 3
    seed = int(torch.randint(0, 2**31, (), generator=generator))
    image = random_image(height, width, channels, seed=seed).to(torch.uint8)
    instances = Instances((height, width))
    largest = min(200, height, width)
    corner = torch.rand(objects, 2, generator=generator) * torch.tensor(
        [width - largest + 1, height - largest + 1]
    )
    size = 20 + torch.rand(objects, 2, generator=generator) * (largest - 20)
    instances.gt_boxes = Boxes(torch.cat([corner, corner + size], 1))
    instances.gt_classes = torch.randint(0, cfg.MODEL.ROI_HEADS.NUM_CLASSES, (objects,), generator=generator)
    return {"image": image, "instances": instances, "height": height, "width": width}


def evaluations(max_iter: int, period: int) -> int:
    """How many times detectron2's EvalHook evaluates a run: every ``period`` iterations and after the last."""
    if period <= 0:
        return 1
    return max_iter // period + (1 if max_iter % period else 0)


def random_teacher_weights(teacher_cfg, folder: str) -> str:
    """A checkpoint of random weights of the teacher ``teacher_cfg``: time does not depend on them."""
    from detectron2.modeling import build_model

    path = str(Path(folder) / "teacher.pth")
    torch.save({"model": build_model(teacher_cfg).state_dict()}, path)
    return path


def time_stage(chain: Chain, config: str, opts: list[str], warmup: int, steps: int) -> dict:
    """Seconds per training step and per test image of ``config`` with ``opts`` (random weights), and its
    schedule and hours on ``chain``'s val set."""
    from detectron2.utils.events import EventStorage

    from quant_mimic.config import build_config, load_teacher_config
    from quant_mimic.deploy.runtime import resized_shape
    from quant_mimic.engine import Trainer
    from quant_mimic.timing import time_calls

    cfg = build_config(str(CONFIGS / config), [*opts, "MODEL.WEIGHTS", ""])
    height, width, objects = chain.typical_image
    train_size = resized_shape(height, width, cfg.INPUT.MIN_SIZE_TRAIN[0], cfg.INPUT.MAX_SIZE_TRAIN)
    test_size = resized_shape(height, width, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    generator = torch.Generator().manual_seed(0)
    batch = [random_input(cfg, *train_size, objects, generator) for _ in range(cfg.SOLVER.IMS_PER_BATCH)]

    class FedTrainer(Trainer):
        @classmethod
        def build_train_loader(cls, cfg):
            return itertools.repeat(batch)

    with tempfile.TemporaryDirectory(prefix="quantmimic-estimate-") as tmp:
        run_cfg = cfg.clone()
        run_cfg.defrost()
        run_cfg.merge_from_list([*_TIMED_RUN, "OUTPUT_DIR", tmp])
        teacher_cfg = None
        if cfg.MODEL.META_ARCHITECTURE == "QuantMimicRCNN":
            teacher_cfg = load_teacher_config(cfg)
            run_cfg.MODEL.QUANT_MIMIC.TEACHER_WEIGHTS = random_teacher_weights(teacher_cfg, tmp)
        torch.manual_seed(0)
        trainer = FedTrainer(run_cfg, teacher_cfg)

        def step(lap) -> None:  # one iteration of detectron2's TrainerBase.train
            trainer.before_step()
            trainer.run_step()
            trainer.after_step()
            trainer.iter += 1

        with EventStorage(0) as trainer.storage:
            trainer.before_train()
            train = time_calls(step, steps, warmup, cfg.MODEL.DEVICE).median_s()
            trainer.after_train()
    model = trainer.bare_model.eval()  # a QuantMimicRCNN infers with its student
    image = random_input(cfg, *test_size, 0, generator)
    del image["instances"]
    with torch.no_grad():
        test = time_calls(lambda lap: model([image]), steps, warmup, cfg.MODEL.DEVICE).median_s()
    n_evals = evaluations(cfg.SOLVER.MAX_ITER, cfg.TEST.EVAL_PERIOD)
    return {
        "config": config,
        "s_per_iter": round(train, 4),
        "s_per_test_image": round(test, 4),
        "max_iter": cfg.SOLVER.MAX_ITER,
        "evaluations": n_evals,
        "train_size": list(train_size),
        "test_size": list(test_size),
        "hours": round((cfg.SOLVER.MAX_ITER * train + n_evals * chain.val_images * test) / 3600, 2),
    }


def estimate(chain: Chain, opts: list[str], seeds: int, warmup: int, steps: int) -> dict:
    """Time every stage of ``chain`` (config overrides ``opts``, the students ``seeds`` times), print the
    table and the total, and return them."""
    import quant_mimic  # noqa: F401  (registers the project's models)
    from quant_mimic.config import build_config

    logging.getLogger("detectron2").setLevel(logging.INFO)  # enabled, so the trainer sets up no printing
    warnings.filterwarnings(
        "ignore", message=r"torch\.meshgrid", category=UserWarning
    )  # detectron2's anchors
    rows = [time_stage(chain, spec.config, opts, warmup, steps) for spec in chain.stages()]
    for row in rows[2:]:
        row["hours"] = round(row["hours"] * seeds, 2)
    total = round(sum(r["hours"] for r in rows), 2)
    device = build_config(str(CONFIGS / chain.teacher.config), opts).MODEL.DEVICE
    device = (
        torch.cuda.get_device_name(device)
        if device.startswith("cuda")
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(f"{chain.title} on {device}, {seeds} seed(s):")
    print("| config | s / iteration | s / test image | iterations | evaluations | hours |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['s_per_iter']:.3f} | {r['s_per_test_image']:.3f} | {r['max_iter']} | "
              f"{r['evaluations']} | {r['hours']:.1f} |")  # fmt: skip
    print(
        f"Estimated main job: {total:.1f} h (training and evaluation; data loading and the report not included)."
    )
    return {"setting": chain.name, "device": device, "seeds": seeds, "stages": rows, "hours": total}
