#!/usr/bin/env python
"""Run a trained QuantMimic detector on images, a video or a webcam, and draw its detections.

    python projects/QuantMimic/demo.py --config-file projects/QuantMimic/configs/shapes/teacher_R18_2_FPN.yaml \\
        --input 'images/*.png' --output-dir vis/ --weights output/shapes/teacher_R18_2_FPN/model_final.pth
    python projects/QuantMimic/demo.py --config-file output/shapes/student_qm_seed0/student_config.yaml \\
        --video-input clip.mp4 --output vis/clip.mp4
    python projects/QuantMimic/demo.py --config-file ... --webcam --weights ... MODEL.DEVICE cuda
    python projects/QuantMimic/demo.py --deployed deployed/qm_student --input 'images/*.png' --output-dir vis/
    python projects/QuantMimic/demo.py --config-file output/mydata/teacher_R18_2_FPN/config.yaml \
        --dataset myval=coco:val.json:images/ --input 'images/*.jpg' --output-dir vis/ --weights ...

The detector runs in its deployed form (quant_mimic.deploy: folded, traced, batched inference), made
on the fly from the config and weights; ``--deployed DIR`` runs a folder written by
``python -m quant_mimic_tools.deploy``; ``--eager`` runs detectron2's GeneralizedRCNN instead.
A QM run's student export (``student_config.yaml``, whose MODEL.WEIGHTS names ``student_final.pth`` next to
it) runs as is; a QuantMimicRCNN config runs its student, with a QM checkpoint or a student export as
MODEL.WEIGHTS. ``--dataset NAME=...`` (datasets/README.md) registers a data set of your own, so that a
model trained on it draws its class names (the config's DATASETS.TEST[0]) and has its number of classes.
``--weights FILE`` sets MODEL.WEIGHTS; other config overrides are ``KEY VALUE`` pairs at the end of the
command line (or after ``--opts``, the older spelling; a pair after ``--input`` ends its list of images).
``--output-dir DIR`` writes the drawn images (named like their inputs) or the video (``<name>.mp4``) into
DIR; ``--output FILE`` writes one drawn image or the video to FILE; without either they are shown in a
window. The predict + draw logic is quant_mimic/predictor.py.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import time
import warnings
from typing import Sequence

# torch's deprecation notices about what detectron2 calls at import (torch.jit.script): noise in --help
# and around the one-line errors (as train_net.py filters them)
warnings.filterwarnings("ignore", message=r".*(deprecat|in an upcoming release)", category=FutureWarning)

import cv2  # noqa: E402
import torch  # noqa: E402
import tqdm  # noqa: E402
from detectron2.config import CfgNode  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import quant_mimic  # noqa: E402, F401  (registers the project's models, backbones and data sets)
from quant_mimic.config import build_config, deployed_config, fall_back_to_cpu, resolve_config_path  # noqa: E402
from quant_mimic.data.user import add_dataset_argument, configure_classes, register_user_datasets  # noqa: E402
from quant_mimic.deploy.runtime import DeployedFolderError, load_spec  # noqa: E402
from quant_mimic.engine.checks import check_weights  # noqa: E402
from quant_mimic.errors import QuantMimicInputError  # noqa: E402
from quant_mimic.predictor import VisualizationDemo  # noqa: E402
from quant_mimic_tools.cli import HelpFormatter, add_overrides, run  # noqa: E402

WINDOW_NAME = "QuantMimic detections"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+")  # MODEL.WEIGHTS: where overrides begin


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE", help="the detector's config")
    parser.add_argument(
        "--weights", metavar="FILE", help="its trained checkpoint (default: the config's MODEL.WEIGHTS)"
    )
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
    source.add_argument(
        "--input", nargs="+", metavar="IMAGE", help="image files or globs, e.g. 'dir/*.png' (quoted)"
    )
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    source.add_argument("--webcam", action="store_true", help="the first webcam (shown in a window)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--output-dir",
        metavar="DIR",
        help="the folder for the drawn images (named like their inputs) or the video (<name>.mp4); without "
        "--output-dir or --output they are shown in a window",
    )
    output.add_argument("--output", metavar="FILE", help="the file for the one drawn image or the video")
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.5, help="minimum score of a drawn detection"
    )
    add_dataset_argument(parser)
    parser.add_argument(
        "--opts",
        dest="opts_after_flag",
        default=[],
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="the config overrides after --opts instead (the older spelling)",
    )
    add_overrides(parser, "the detector's config")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, with ``args.opts`` all the config overrides: trailing pairs (also those that ``--input``
    took for images: from the first KEY that is no file on), ``--opts`` pairs, then ``--weights``."""
    args = get_parser().parse_args(argv)
    if args.input:
        for i, item in enumerate(args.input):
            if CONFIG_KEY.fullmatch(item) and not os.path.exists(item):
                args.input, args.opts = args.input[:i], args.input[i:] + args.opts
                break
        if not args.input:
            get_parser().error("--input needs at least one image file or glob before the config overrides")
    args.opts = list(args.opts) + list(args.opts_after_flag)
    if args.weights:
        args.opts += ["MODEL.WEIGHTS", args.weights]
    return args


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
            "MODEL.WEIGHTS is empty: pass a trained checkpoint with --weights output/.../model_final.pth "
            "(or a QM run's student_config.yaml as --config-file)."
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


def output_paths(inputs: Sequence[str], output: str, as_folder: bool) -> list[str]:
    """Where each drawn image goes: into the folder ``output`` (``--output-dir``, made if needed), else to
    the file ``output`` (``--output``, one image only)."""
    if not as_folder and len(inputs) > 1:
        raise QuantMimicInputError(
            f"--output {output} is one file but --input gives {len(inputs)} images: pass --output-dir DIR."
        )
    if not as_folder and os.path.isdir(output):
        raise QuantMimicInputError(f"--output {output} is a folder: pass --output-dir {output}.")
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
    if args.output or args.output_dir:
        out = args.output
        if args.output_dir:
            out = args.output_dir
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
    if args.output or args.output_dir:
        raise QuantMimicInputError("--webcam shows its frames in a window: drop --output / --output-dir.")
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
    run("demo.py", parse_args, run_demo, argv, errors=(DeployedFolderError,))


def run_demo(args: argparse.Namespace) -> None:
    """Draw the detections of ``args``' model on its images, video or webcam frames; raises
    QuantMimicInputError or DeployedFolderError (one sentence each)."""
    logger = setup_logger(name="quant_mimic.demo")
    if args.deployed and (args.config_file or args.eager or args.weights):
        raise QuantMimicInputError(
            "--deployed runs a deployed folder alone: drop --config-file, --weights and --eager."
        )
    if args.deployed:
        load_spec(args.deployed)  # every file against the folder's manifest, then deploy.json
    cfg = None if args.deployed else setup_cfg(args)
    if args.input:  # check the inputs before the model is built
        inputs = expand_inputs(args.input)
        out = args.output_dir or args.output
        outputs = output_paths(inputs, out, args.output_dir is not None) if out else [None] * len(inputs)
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


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
