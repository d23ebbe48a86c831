#!/usr/bin/env python
"""Run a trained QuantMimic detector on images, a video or a webcam, and draw its detections.

    python projects/QuantMimic/demo.py --config-file projects/QuantMimic/configs/shapes/teacher_R18_2_FPN.yaml \\
        --input 'images/*.png' --output vis/ --opts MODEL.WEIGHTS output/shapes/teacher_R18_2_FPN/model_final.pth
    python projects/QuantMimic/demo.py --config-file output/shapes/student_qm_seed0/student_config.yaml \\
        --video-input clip.mp4 --output vis/clip.mp4
    python projects/QuantMimic/demo.py --config-file ... --webcam --opts MODEL.WEIGHTS ...
    python projects/QuantMimic/demo.py --deployed deployed/qm_student --input 'images/*.png' --output vis/
    python projects/QuantMimic/demo.py --config-file output/mydata/teacher_R18_2_FPN/config.yaml \
        --dataset myval=coco:val.json:images/ --input 'images/*.jpg' --output vis/ --opts MODEL.WEIGHTS ...

The detector runs in its deployed form (quant_mimic.deploy: folded, traced, batched inference), made
on the fly from the config and weights; ``--deployed DIR`` runs a folder written by
``python -m quant_mimic_tools.deploy``; ``--eager`` runs detectron2's GeneralizedRCNN instead.
A QM run's student export (``student_config.yaml``, whose MODEL.WEIGHTS names ``student_final.pth`` next to
it) runs as is; a QuantMimicRCNN config runs its student, with a QM checkpoint or a student export as
MODEL.WEIGHTS. ``--dataset NAME=...`` (datasets/README.md) registers a data set of your own, so that a
model trained on it draws its class names (the config's DATASETS.TEST[0]) and has its number of classes.
The predict + draw logic is quant_mimic/predictor.py.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from typing import Sequence

import cv2
import torch
import tqdm
from detectron2.config import CfgNode
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger

import quant_mimic  # noqa: F401  (registers the project's models, backbones and data sets)
from quant_mimic.config import build_config, deployed_config, fall_back_to_cpu, resolve_config_path
from quant_mimic.data.user import add_dataset_argument, configure_classes, register_user_datasets
from quant_mimic.deploy.runtime import DeployedFolderError, load_spec
from quant_mimic.engine.setup import check_weights
from quant_mimic.errors import QuantMimicInputError
from quant_mimic.predictor import VisualizationDemo

WINDOW_NAME = "QuantMimic detections"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a config file")
    parser.add_argument(
        "--deployed",
        metavar="DIR",
        help="a deployed folder (python -m quant_mimic_tools.deploy) instead of --config-file and weights",
    )
    parser.add_argument(
        "--eager",
        action="store_true",
        help="run detectron2's GeneralizedRCNN instead of the deployed form (for comparison)",
    )
    parser.add_argument("--device", default="cpu", help="the device of a --deployed folder: cpu or cuda")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files or globs, e.g. 'dir/*.png' (quoted)")
    source.add_argument("--video-input", help="a video file")
    source.add_argument("--webcam", action="store_true", help="the first webcam (shown in a window)")
    parser.add_argument(
        "--output",
        help="a file or a folder for the drawn images / video (a folder when several images are given); "
        "without it they are shown in a window",
    )
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.5, help="minimum score of a drawn detection"
    )
    add_dataset_argument(parser)
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth MODEL.DEVICE cpu",
    )
    return parser


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """The deployed model's config (a QuantMimicRCNN config: its student) with the score threshold set and
    MODEL.WEIGHTS checked; raises QuantMimicInputError."""
    datasets = register_user_datasets(args.dataset)
    cfg = build_config(args.config_file, args.opts, cpu_fallback=False)
    configure_classes(cfg, args.opts, datasets)  # the number of classes of a --dataset
    cfg = deployed_config(cfg)
    requested = fall_back_to_cpu(cfg)
    if requested:
        print(f"demo.py: MODEL.DEVICE is {requested} but no CUDA device is available: running on the CPU.",
              file=sys.stderr)  # fmt: skip
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = args.confidence_threshold
    if not cfg.MODEL.WEIGHTS:
        raise QuantMimicInputError(
            "MODEL.WEIGHTS is empty: pass a trained checkpoint with --opts MODEL.WEIGHTS "
            "output/.../model_final.pth (or a QM run's student_config.yaml as --config-file)."
        )
    # a student export names its weights relative to where training ran: also look next to the config
    cfg.MODEL.WEIGHTS = resolve_config_path(cfg.MODEL.WEIGHTS, args.config_file)
    check_weights(cfg.MODEL.WEIGHTS)
    cfg.freeze()
    return cfg


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Image paths from files and globs, in order; raises QuantMimicInputError for one that names nothing."""
    paths = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            if not matches:
                raise QuantMimicInputError(
                    f"--input {pattern} matches no file: check the folder and pattern."
                )
            paths += matches
        elif os.path.isfile(pattern):
            paths.append(pattern)
        else:
            raise QuantMimicInputError(
                f"--input file {pattern} does not exist: pass an image file or a glob."
            )
    return paths


def output_paths(inputs: Sequence[str], output: str) -> list[str]:
    """Where each drawn image goes: into ``output`` when it is a folder (made if needed, and always with
    several inputs), else to the file ``output``."""
    as_folder = os.path.isdir(output) or len(inputs) > 1 or output.endswith(os.sep)
    if as_folder and os.path.splitext(output)[1].lower() in IMAGE_EXTENSIONS:
        raise QuantMimicInputError(
            f"--output {output} is an image file name but --input gives {len(inputs)} images: pass a folder."
        )
    if as_folder:
        os.makedirs(output, exist_ok=True)
        names = [os.path.basename(p) for p in inputs]
        if len(set(names)) < len(names):
            raise QuantMimicInputError(
                f"--input has several images named alike ({len(names) - len(set(names))} repeats): they "
                f"would overwrite each other in {output}; run them separately."
            )
        return [os.path.join(output, n) for n in names]
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    return [output]


def _read(path: str):
    try:
        return read_image(path, format="BGR")
    except OSError as e:  # PIL's UnidentifiedImageError is an OSError
        raise QuantMimicInputError(
            f"--input file {path} is not a readable image ({e.__class__.__name__})."
        ) from None


def run_images(demo: VisualizationDemo, inputs: list[str], outputs: list[str | None], logger) -> None:
    for path, out in zip(tqdm.tqdm(inputs, disable=None in outputs), outputs):
        image = _read(path)
        start = time.perf_counter()
        predictions, vis = demo.run_on_image(image)
        logger.info(
            f"{path}: detected {len(predictions['instances'])} instances in {time.perf_counter() - start:.2f}s"
        )
        if out:
            if not cv2.imwrite(out, vis.get_image()[:, :, ::-1]):
                raise QuantMimicInputError(f"--output {out} could not be written: use a .png or .jpg name.")
        else:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, vis.get_image()[:, :, ::-1])
            if cv2.waitKey(0) == 27:
                break  # esc quits


def run_video(demo: VisualizationDemo, args: argparse.Namespace) -> None:
    video = cv2.VideoCapture(args.video_input)
    if not video.isOpened():
        raise QuantMimicInputError(f"--video-input file {args.video_input} is not a video OpenCV can read.")
    width, height = int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    writer = None
    if args.output:
        out = args.output
        if os.path.isdir(out) or out.endswith(os.sep):
            os.makedirs(out, exist_ok=True)
            out = os.path.join(out, os.path.splitext(os.path.basename(args.video_input))[0] + ".mp4")
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height), True)
        if not writer.isOpened():
            raise QuantMimicInputError(f"--output {out} could not be opened for writing: use an .mp4 name.")
    try:
        for frame in tqdm.tqdm(demo.run_on_video(video), total=frames, disable=writer is None):
            if writer is not None:
                writer.write(frame)
            elif not show(frame):
                break
    finally:
        video.release()
        if writer is not None:
            writer.release()
        else:
            cv2.destroyAllWindows()


def show(frame) -> bool:
    """Show a BGR frame in the demo's window; False once the user pressed esc."""
    cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
    cv2.imshow(WINDOW_NAME, frame)
    return cv2.waitKey(1) != 27


def run_webcam(demo: VisualizationDemo, args: argparse.Namespace) -> None:
    if args.output:
        raise QuantMimicInputError("--webcam shows its frames in a window: drop --output.")
    cam = cv2.VideoCapture(0)
    if not cam.isOpened():
        raise QuantMimicInputError("--webcam: no camera could be opened (cv2.VideoCapture(0)).")
    try:
        for frame in demo.run_on_video(cam):
            if not show(frame):
                break
    finally:
        cam.release()
        cv2.destroyAllWindows()


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    logger = setup_logger(name="quant_mimic.demo")
    try:
        if args.deployed and (args.config_file or args.eager):
            raise QuantMimicInputError(
                "--deployed runs a deployed folder alone: drop --config-file and --eager."
            )
        if args.deployed:
            load_spec(args.deployed)  # every file against the folder's manifest, then deploy.json
        cfg = None if args.deployed else setup_cfg(args)
        if args.input:  # check the inputs before the model is built
            inputs = expand_inputs(args.input)
            outputs = output_paths(inputs, args.output) if args.output else [None] * len(inputs)
        elif args.video_input and not os.path.isfile(args.video_input):
            raise QuantMimicInputError(
                f"--video-input file {args.video_input} does not exist: pass a video file."
            )
        if args.deployed:
            demo = VisualizationDemo.from_deployed(
                args.deployed, args.device, score_thresh=args.confidence_threshold
            )
        else:
            demo = VisualizationDemo(cfg, eager=args.eager)
        if args.input:
            run_images(demo, inputs, outputs, logger)
        elif args.video_input:
            run_video(demo, args)
        else:
            run_webcam(demo, args)
    except (QuantMimicInputError, DeployedFolderError) as e:
        print(f"demo.py: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
