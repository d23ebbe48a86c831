"""demo.py end to end on CPU with random weights: images, globs, video, a student export, bad input."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from conftest import CONFIGS, PROJECT, REPO, STUDENT_CONFIG
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from quant_mimic.config import build_config, deployed_config
from quant_mimic.data import MINI_SPEC, render_image
from quant_mimic.engine.export import export_student
from quant_mimic.predictor import Predictor

DEMO = PROJECT / "demo.py"
CPU = ["MODEL.DEVICE", "cpu"]


def run_demo(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """demo.py in its own process (one intra-op thread: the test machine's cores are shared)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(DEMO), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def load_demo_module():
    """demo.py imported as a module, so most cases run in this process (no start-up cost)."""
    spec = importlib.util.spec_from_file_location("quantmimic_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_demo_module()


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A random-weight student saved with DetectionCheckpointer, and two rendered 192 px BGR images."""
    folder = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    cfg = build_config(str(STUDENT_CONFIG), CPU)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(folder)).save("student")
    images = []
    for i in range(2):
        rgb, _ = render_image(np.random.default_rng(i), MINI_SPEC)
        path = folder / "images" / f"shapes_{i}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), rgb[:, :, ::-1])
        images.append(path)
    return SimpleNamespace(folder=folder, weights=folder / "student.pth", images=images, model=model, cfg=cfg)


def student_args(student) -> list[str]:
    return ["--config-file", str(STUDENT_CONFIG), "--confidence-threshold", "0.0"]


def test_a_qm_student_export_draws_boxes_on_an_image(student, tmp_path):
    """The files a QM run exports (student_config.yaml + student_final.pth) run as they are."""
    qm_cfg = build_config(str(CONFIGS / "qm_R_tiny_FPN.yaml"), CPU)
    fake_qm = SimpleNamespace(student_state_dict=student.model.state_dict)  # what export_student reads
    _, config = export_student(fake_qm, qm_cfg, str(tmp_path / "qm_run"))
    out = tmp_path / "vis.png"
    run = run_demo(["--config-file", config, "--input", str(student.images[0]), "--output", str(out),
                    "--confidence-threshold", "0.0", "--opts", *CPU])  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "detected" in run.stdout
    drawn, original = cv2.imread(str(out)), cv2.imread(str(student.images[0]))
    assert drawn.shape == original.shape
    # random weights still give boxes at threshold 0: a good share of the pixels changed
    assert (np.abs(drawn.astype(int) - original.astype(int)).sum(axis=2) > 30).mean() > 0.01


def test_a_glob_of_two_images_writes_two_outputs_in_the_folder(student, tmp_path):
    out = tmp_path / "vis"
    pattern = str(student.images[0].parent / "shapes_*.png")
    demo.main([*student_args(student), "--input", pattern, "--output-dir", str(out),
               "--weights", str(student.weights), *CPU])  # fmt: skip
    assert sorted(os.listdir(out)) == ["shapes_0.png", "shapes_1.png"]
    for name in os.listdir(out):
        assert cv2.imread(str(out / name)).shape == (MINI_SPEC.image_size, MINI_SPEC.image_size, 3)


def test_a_video_of_three_frames_gives_a_video_of_three_frames(student, tmp_path):
    size = MINI_SPEC.image_size
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (size, size))
    for i in (0, 1, 0):
        writer.write(cv2.imread(str(student.images[i])))
    writer.release()
    out = tmp_path / "vis" / "clip.mp4"
    demo.main([*student_args(student), "--video-input", str(video), "--output", str(out),
               "--opts", "MODEL.WEIGHTS", str(student.weights), *CPU])  # fmt: skip
    capture = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 3
    assert frames[0].shape == (size, size, 3)


@pytest.mark.parametrize(
    "case",
    ["missing_input", "empty_glob", "missing_config", "missing_weights", "no_weights"],
)
def test_bad_input_is_one_sentence_and_exit_2(student, tmp_path, capsys, case):
    """Each exits before the model is built, with one line naming what is wrong (a missing input file in
    its own process, the others in this one)."""
    missing = str(tmp_path / "nowhere" / "image.png")
    args = {
        "missing_input": [*student_args(student), "--input", missing, "--opts", "MODEL.WEIGHTS",
                          str(student.weights), *CPU],
        "empty_glob": [*student_args(student), "--input", str(tmp_path / "*.jpg"), "--opts", "MODEL.WEIGHTS",
                       str(student.weights), *CPU],
        "missing_config": ["--config-file", str(tmp_path / "none.yaml"), "--input", str(student.images[0])],
        "missing_weights": [*student_args(student), "--input", str(student.images[0]), "--opts",
                            "MODEL.WEIGHTS", missing, *CPU],
        "no_weights": [*student_args(student), "--input", str(student.images[0]), "--opts", *CPU],
    }[case]  # fmt: skip
    named = {
        "missing_input": missing,
        "empty_glob": str(tmp_path / "*.jpg"),
        "missing_config": "none.yaml",
        "missing_weights": missing,
        "no_weights": "MODEL.WEIGHTS",
    }[case]
    if case == "missing_input":
        run = run_demo(args)
        code, stderr = run.returncode, run.stderr
    else:
        with pytest.raises(SystemExit) as exit_info:
            demo.main(args)
        code, stderr = exit_info.value.code, capsys.readouterr().err
    assert code == 2, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo.py: error: ") and named in lines[0], stderr


def test_a_quant_mimic_config_runs_its_student_from_a_qm_checkpoint(student, tmp_path):
    """A QuantMimicRCNN checkpoint (student.*, teacher.*, adapter.* keys) loads into the student alone."""
    state = {f"student.{k}": v for k, v in student.model.state_dict().items()}
    state["teacher.model.backbone.bottom_up.stem.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    state["adapter.weight"] = torch.zeros(128, 16, 1, 1)
    torch.save({"model": state, "iteration": 10}, tmp_path / "model_final.pth")
    cfg = build_config(
        str(CONFIGS / "qm_R_tiny_FPN.yaml"), ["MODEL.WEIGHTS", str(tmp_path / "model_final.pth"), *CPU]
    )
    predictor = Predictor(deployed_config(cfg))  # as demo.py's set-up passes it
    assert type(predictor.model).__name__ == "GeneralizedRCNN"
    loaded = predictor.model.state_dict()
    assert loaded.keys() == student.model.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in student.model.state_dict().items())
    image = cv2.imread(str(student.images[0]))
    assert "instances" in predictor(image)


def test_the_deployed_and_the_eager_model_draw_the_same_picture(student, tmp_path):
    """The default (deployed on the fly), --eager (detectron2's model) and --deployed DIR agree."""
    from quant_mimic.deploy import export_deployed

    common = ["--input", str(student.images[0]), "--confidence-threshold", "0.2"]
    weights = ["--opts", "MODEL.WEIGHTS", str(student.weights), *CPU]
    pictures = {}
    for name, args in {
        "default": ["--config-file", str(STUDENT_CONFIG), *common, *weights],
        "eager": ["--config-file", str(STUDENT_CONFIG), "--eager", *common, *weights],
    }.items():
        np.random.seed(0)  # the Visualizer jitters its colours with numpy's global generator
        demo.main(
            [
                *args[: args.index("--opts")],
                "--output",
                str(tmp_path / f"{name}.png"),
                *args[args.index("--opts") :],
            ]
        )
        pictures[name] = cv2.imread(str(tmp_path / f"{name}.png"))
    cfg = build_config(str(STUDENT_CONFIG), [*CPU, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.2"])
    folder = export_deployed(cfg, student.model.eval(), tmp_path / "deployed")
    np.random.seed(0)
    demo.main(["--deployed", str(folder), *common, "--output", str(tmp_path / "folder.png")])
    pictures["folder"] = cv2.imread(str(tmp_path / "folder.png"))
    original = cv2.imread(str(student.images[0]))
    assert (np.abs(pictures["eager"].astype(int) - original.astype(int)).sum(axis=2) > 30).mean() > 0.01
    for name in ("default", "folder"):
        differ = (np.abs(pictures[name].astype(int) - pictures["eager"].astype(int)).sum(axis=2) > 30).mean()
        assert differ < 0.002, f"{name}: {differ:.4f} of the pixels differ from the eager picture"


@pytest.mark.parametrize("config", ["student_VGG32_RFCN_scratch.yaml", "student_R18_16_FPN_scratch.yaml"])
def test_the_eager_predictor_takes_the_models_input_format_like_the_deployed_one(student, tmp_path, config):
    """Grayscale ("L") R-FCN and BGR Faster R-CNN: the eager Predictor converts a BGR image as the
    deployed predictor does, and both give the same detections."""
    from quant_mimic.deploy import DeployedPredictor, export_deployed

    cfg = build_config(str(CONFIGS / "shapes" / config), CPU)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    cfg.MODEL.WEIGHTS = str(tmp_path / "model.pth")
    image = cv2.imread(str(student.images[0]))
    eager = Predictor(cfg)(image)["instances"]
    deployed = DeployedPredictor(export_deployed(cfg, model, tmp_path / "deployed"))(image)["instances"]
    assert eager.image_size == deployed.image_size == image.shape[:2] and len(eager) > 0
    n = min(10, len(eager))
    assert torch.equal(eager.pred_classes[:n], deployed.pred_classes[:n])
    torch.testing.assert_close(deployed.pred_boxes.tensor[:n], eager.pred_boxes.tensor[:n], atol=0.5, rtol=0)
