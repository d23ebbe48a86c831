"""The deployed form (quant_mimic.deploy): folding, the batched runtime against detectron2's own parts and
against the eager model, batches, a fresh process, the command, and CUDA paths where CUDA is present."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import CONFIGS, PROJECT, STUDENT_CONFIG
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.layers import Conv2d
from detectron2.modeling import build_model
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone.resnet import BasicStem
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes
from torch import nn
from torchvision.ops import batched_nms

from quant_mimic.config import build_config
from quant_mimic.deploy import DeployedPredictor, export_deployed, fold_batch_norm
from quant_mimic.deploy.export import BackboneNetwork, fold_input_scale
from quant_mimic.deploy.runtime import (
    DEPLOY_FILE,
    clip_boxes,
    decode_boxes,
    finite,
    grid_anchors,
    matrix_nms,
    resized_shape,
)
from quant_mimic.deploy.stem import PhaseSplitStem, split_narrow_stems
from quant_mimic_tools.deploy import main as deploy_main

CPU = ["MODEL.DEVICE", "cpu"]
RUNTIME = PROJECT / "quant_mimic" / "deploy" / "runtime"


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine values, so that folding has work to do."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                m.bias.copy_(torch.rand(c, generator=generator) * 0.4 - 0.2)
    return model


def random_model(config, seed: int = 0, batch_norm: bool = True):
    cfg = build_config(str(config), CPU)
    torch.manual_seed(seed)
    model = build_model(cfg)
    return cfg, (randomize_batch_norm(model, seed) if batch_norm else model).eval()


def images(sizes, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def assert_same_detections(eager, deployed, top: int = 20, atol: float = 0.5) -> None:
    """Same number of detections; the ``top`` best have the same classes, boxes within ``atol`` px."""
    assert len(eager) == len(deployed) > 0
    n = min(top, len(eager))
    assert torch.equal(eager.pred_classes[:n], deployed.pred_classes[:n])
    torch.testing.assert_close(deployed.pred_boxes.tensor[:n], eager.pred_boxes.tensor[:n], atol=atol, rtol=0)
    torch.testing.assert_close(deployed.scores[:n], eager.scores[:n], atol=1e-4, rtol=0)


def test_folding_batch_norm_keeps_the_outputs_and_removes_the_norms():
    torch.manual_seed(0)
    conv = Conv2d(3, 8, 3, padding=1, bias=False, norm=nn.BatchNorm2d(8))
    model = randomize_batch_norm(nn.Sequential(conv, Conv2d(8, 4, 1, norm=nn.GroupNorm(2, 4)))).eval()
    x = torch.randn(2, 3, 9, 9)
    folded, count = fold_batch_norm(model)
    assert count == 1  # GroupNorm depends on its input: it stays
    assert folded[0].norm is None and isinstance(folded[1].norm, nn.GroupNorm)
    assert model[0].norm is not None  # the original is untouched
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batch_norm(model.train())


@pytest.mark.parametrize("channels", [4, 2])
def test_a_narrow_stem_computed_as_four_phases_gives_the_stems_output(channels):
    torch.manual_seed(0)
    stem = randomize_batch_norm(BasicStem(3, channels, norm="BN")).eval()
    folded, _ = fold_batch_norm(stem)
    split = PhaseSplitStem(folded)
    x = torch.randn(2, 3, 64, 96) * 50
    with torch.no_grad():
        expected, got = stem(x), split(x)
    assert got.shape == expected.shape == (2, channels, 16, 24)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="norm folded"):
        PhaseSplitStem(stem)


def test_only_narrow_stems_on_inputs_in_multiples_of_4_are_split():
    def backbone(channels: int) -> nn.Module:
        return nn.Sequential(fold_batch_norm(BasicStem(3, channels, norm="BN").eval())[0])

    wide, narrow, odd = backbone(32), backbone(4), backbone(4)
    assert split_narrow_stems(wide, 32) == 0 and type(wide[0]) is BasicStem
    assert split_narrow_stems(odd, 0) == 0 and split_narrow_stems(odd, 6) == 0 and type(odd[0]) is BasicStem
    assert split_narrow_stems(narrow, 32) == 1 and isinstance(narrow[0], PhaseSplitStem)


@pytest.mark.parametrize("config", [STUDENT_CONFIG, CONFIGS / "shapes" / "student_VGG32_RFCN_scratch.yaml"])
def test_the_pixel_std_is_folded_into_the_first_conv_with_the_same_features(config):
    cfg, model = random_model(config)
    folded, _ = fold_batch_norm(model)
    network = BackboneNetwork(folded, list(model.backbone.output_shape()))
    assert network.std_folded and torch.equal(network.pixel_std, torch.ones_like(network.pixel_std))
    assert network.stems_split == (1 if "R18_16" in str(config) else 0)  # the 4-channel stem: phases
    images = torch.rand(2, len(cfg.MODEL.PIXEL_MEAN), 64, 96) * 255
    with torch.no_grad():
        expected = model.backbone((images - model.pixel_mean) / model.pixel_std)
        for name, got in zip(
            network.features, network(images - model.pixel_mean)
        ):  # the runtime subtracts it
            torch.testing.assert_close(got, expected[name], atol=1e-4, rtol=1e-4)
    # a backbone whose input does not go to a conv first keeps the division
    assert not fold_input_scale(nn.Sequential(nn.ReLU(), nn.Conv2d(3, 4, 3)), torch.ones(3), 3)


@pytest.mark.parametrize("size", [(6, 7), (48, 48)])
def test_anchors_equal_detectron2s_anchor_generator(size):
    generator = DefaultAnchorGenerator(
        sizes=[[12, 24]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[4], offset=0.0
    )
    feature = torch.zeros(1, 1, *size)
    expected = generator([feature])[0].tensor
    ours = grid_anchors(list(generator.cell_anchors)[0], 4, 0.0, *size)
    torch.testing.assert_close(ours, expected, atol=0, rtol=0)


@pytest.mark.parametrize("weights", [(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0), (1.0, 2.0, 3.0, 4.0)])
def test_box_decoding_equals_box2box_transform_for_class_specific_deltas(weights):
    transform = Box2BoxTransform(weights=weights)
    generator = torch.Generator().manual_seed(0)
    boxes = torch.rand(7, 2, generator=generator) * 100
    boxes = torch.cat([boxes, boxes + torch.rand(7, 2, generator=generator) * 50 + 1], dim=1)
    deltas = torch.randn(7, 3 * 4, generator=generator) * 2
    deltas[0, 2] = 100.0  # beyond the scale clamp
    expected = transform.apply_deltas(deltas, boxes).view(7, 3, 4)
    ours = decode_boxes(deltas.view(7, 3, 4), boxes.unsqueeze(1), transform.weights, transform.scale_clamp)
    torch.testing.assert_close(ours, expected, atol=0, rtol=0)  # the same float operations


def test_clipping_and_finiteness_equal_detectron2s_and_torchs():
    boxes = torch.tensor(
        [[[-5.0, 3.0, 250.0, 90.0], [10.0, -1.0, 20.0, 400.0]], [[0.0, 0.0, 1e9, 5.0], [7, 8, 9, 10]]]
    )
    sizes = torch.tensor([[100, 200], [50, 60]])
    expected = []
    for image, (h, w) in zip(boxes, sizes.tolist()):
        clipped = Boxes(image.clone())
        clipped.clip((h, w))
        expected.append(clipped.tensor)
    torch.testing.assert_close(clip_boxes(boxes, sizes), torch.stack(expected), atol=0, rtol=0)
    x = torch.tensor([0.0, -1e30, math.inf, -math.inf, math.nan, 3.0])
    assert torch.equal(finite(x), torch.isfinite(x))


@pytest.mark.parametrize("short, longest", [(192, 320), (0, 10000)])  # 0: no resize (WIDER FACE configs)
@pytest.mark.parametrize("shape", [(192, 192), (100, 300), (480, 640), (1000, 50)])
def test_test_time_resize_equals_resize_shortest_edge(shape, short, longest):
    image = np.zeros((*shape, 3), dtype=np.uint8)
    transform = T.ResizeShortestEdge(short, longest).get_transform(image)
    expected = (transform.new_h, transform.new_w) if hasattr(transform, "new_h") else shape
    assert resized_shape(*shape, short, longest) == expected


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A random-weight student (non-trivial batch norm) and its deployed folder."""
    cfg, model = random_model(STUDENT_CONFIG)
    folder = export_deployed(cfg, model, tmp_path_factory.mktemp("deployed") / "student")
    return cfg, model, folder


@pytest.mark.parametrize(
    "config, batch_norm",
    [
        (STUDENT_CONFIG, True),
        # Quantized ReLU on the FPN outputs: folding's float rounding moves a value that sits on a code
        # boundary by a whole code, and random weights give near-tied scores, so this case keeps
        # detectron2's initial statistics (folding is then exact); trained teachers are compared by AP.
        (CONFIGS / "shapes" / "teacher_R18_2_FPN_quant.yaml", False),
        (CONFIGS / "shapes" / "student_VGG32_RFCN_scratch.yaml", True),  # R-FCN, grayscale, one feature map
    ],
    ids=["student-fpn", "quantized-teacher", "rfcn-gray"],
)
def test_deployed_detections_match_the_eager_model(config, batch_norm, tmp_path):
    cfg, model = random_model(config, batch_norm=batch_norm)
    folder = export_deployed(cfg, model, tmp_path / "deployed")
    rfcn = cfg.MODEL.ROI_HEADS.NAME == "RFCNROIHeads"
    if rfcn:  # PS-ROIAlign has no ONNX operator: no whole-detector graph, and "auto" knows it
        with pytest.raises(ValueError, match="R-FCN has no whole-detector ONNX graph"):
            DeployedPredictor(folder, backend="onnxruntime_graph")
        assert DeployedPredictor(folder).backend == "onnxruntime"
    else:
        assert DeployedPredictor(folder).backend == "onnxruntime_graph"  # the fastest, measured (README)
    for backend in (
        ("torchscript", "onnxruntime") if rfcn else ("torchscript", "onnxruntime", "onnxruntime_graph")
    ):
        predictor = DeployedPredictor(folder, backend=backend)
        assert predictor.backend == backend
        for image in images([(192, 192), (150, 230)]):
            inputs = predictor.preprocess(image)
            with torch.no_grad():
                eager = model([inputs])[0]["instances"]
            deployed = predictor.model([inputs])[0]["instances"]
            assert deployed.image_size == eager.image_size == image.shape[:2]
            assert_same_detections(eager, deployed)
        if backend == "onnxruntime_graph":  # one graph per padded input shape, and no fallback taken
            assert predictor.graphs.failure is None and len(predictor.graphs.sessions) == 2


def test_whole_detector_graphs_fall_back_to_the_networks_past_their_budget_or_when_export_fails(
    student, monkeypatch, caplog
):
    _, _, folder = student
    batch = images([(192, 192), (150, 230), (64, 90)], seed=3)
    networks = DeployedPredictor(folder, backend="onnxruntime").predict(batch)
    capped = DeployedPredictor(folder, backend="onnxruntime_graph")
    capped.graphs.max_graphs = 1  # the first shape gets a graph, the others run network by network
    for n, r in zip(networks, [capped(image) for image in batch]):
        assert_same_detections(n["instances"], r["instances"], top=100, atol=1e-3)
    assert len(capped.graphs.sessions) == 1

    def no_exporter(*args, **kwargs):
        raise RuntimeError("this torch has no TorchScript-based ONNX exporter")

    monkeypatch.setattr(torch.onnx, "export", no_exporter)
    broken = DeployedPredictor(folder, backend="onnxruntime_graph")
    for n, r in zip(networks, broken.predict(batch)):
        assert_same_detections(n["instances"], r["instances"], top=100, atol=1e-3)
    assert "no TorchScript-based ONNX exporter" in broken.graphs.failure and not broken.graphs.sessions
    assert "No whole-detector ONNX graph" in caplog.text


def test_without_onnx_the_folder_has_torchscript_only_and_still_runs(student, tmp_path, monkeypatch):
    cfg, model, _ = student

    def no_onnx(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'onnx'")

    monkeypatch.setattr(torch.onnx, "export", no_onnx)
    folder = export_deployed(cfg, model, tmp_path / "deployed")
    assert json.loads((folder / DEPLOY_FILE).read_text())["onnx"] is False
    assert not list(folder.glob("*.onnx")) and (folder / "backbone.ts").is_file()
    predictor = DeployedPredictor(folder)
    assert predictor.backend == "torchscript"
    with pytest.raises(ValueError, match="ONNX networks"):
        DeployedPredictor(folder, backend="onnxruntime")
    assert len(predictor(images([(192, 192)])[0])["instances"]) > 0


def test_a_batch_of_different_sizes_gives_the_results_of_one_image_at_a_time(student):
    _, _, folder = student
    predictor = DeployedPredictor(folder)
    batch = images([(192, 192), (150, 230), (192, 192), (64, 90)], seed=1)
    together = predictor.predict(batch)
    for image, result in zip(batch, together):
        alone = predictor(image)["instances"]
        result = result["instances"]
        assert result.image_size == image.shape[:2]
        assert len(result) == len(alone) > 0
        torch.testing.assert_close(result.pred_boxes.tensor, alone.pred_boxes.tensor, atol=1e-3, rtol=0)
        assert torch.equal(result.pred_classes, alone.pred_classes)


def test_a_batch_is_the_images_minus_the_mean_with_zero_padding(student, monkeypatch):
    _, _, folder = student
    predictor = DeployedPredictor(folder)
    full = torch.full  # the batch's memory starts as NaN: only what the batch writes may be left
    monkeypatch.setattr(torch, "empty", lambda shape, **kw: full(shape, math.nan, **kw))
    small = torch.randint(0, 256, (3, 150, 230), dtype=torch.uint8)
    large = torch.randint(0, 256, (3, 192, 200), dtype=torch.uint8)
    batch, sizes = predictor.batch([small, large])
    assert batch.shape == (2, 3, 192, 256) and sizes.tolist() == [[150, 230], [192, 200]]
    for i, image in enumerate((small, large)):
        h, w = image.shape[1:]
        expected = torch.zeros(3, 192, 256)
        expected[:, :h, :w] = image - predictor.pixel_mean
        assert torch.equal(batch[i], expected)


def test_the_deployed_folder_holds_the_test_time_settings(student):
    cfg, _, folder = student
    spec = json.loads((folder / DEPLOY_FILE).read_text())
    assert spec["rpn"]["pre_nms_topk"] == cfg.MODEL.RPN.PRE_NMS_TOPK_TEST
    assert spec["rpn"]["post_nms_topk"] == cfg.MODEL.RPN.POST_NMS_TOPK_TEST
    assert spec["roi"]["detections_per_image"] == cfg.TEST.DETECTIONS_PER_IMAGE
    assert spec["roi"]["score_thresh"] == cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
    assert spec["roi"]["candidates_per_image"] == cfg.MODEL.DEPLOY.CANDIDATES_PER_IMAGE
    assert spec["classes"] == MetadataCatalog.get(cfg.DATASETS.TEST[0]).thing_classes
    assert (folder / "backbone.ts").is_file() and (folder / "head.ts").is_file()


def test_a_deployed_model_loads_in_a_fresh_process_without_the_project(student):
    """The runtime package is loaded on its own, from its folder: no quant_mimic package, no detectron2
    modeling or config."""
    _, model, folder = student
    image = images([(192, 192)])[0]
    np.save(folder.parent / "image.npy", image)
    code = f"""
import importlib.util, json, sys, numpy as np
spec = importlib.util.spec_from_file_location(
    "qm_runtime", {str(RUNTIME / "__init__.py")!r}, submodule_search_locations=[{str(RUNTIME)!r}]
)
runtime = importlib.util.module_from_spec(spec); sys.modules["qm_runtime"] = runtime; spec.loader.exec_module(runtime)
out = runtime.DeployedPredictor({str(folder)!r})(np.load({str(folder.parent / "image.npy")!r}))["instances"]
loaded = sorted(m for m in sys.modules if m.startswith(("quant_mimic", "detectron2.modeling", "detectron2.config")))
print(json.dumps({{"count": len(out), "first": out.pred_boxes.tensor[0].tolist(), "loaded": loaded}}))
"""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], "the runtime imported training code"
    with torch.no_grad():
        eager = model([DeployedPredictor(folder).preprocess(image)])[0]["instances"]
    assert result["count"] == len(eager)
    torch.testing.assert_close(torch.tensor(result["first"]), eager.pred_boxes.tensor[0], atol=0.5, rtol=0)


def run_deploy(args: list[str], capsys) -> tuple[int, list[str]]:
    """``python -m quant_mimic_tools.deploy ARGS`` in this process: exit code and stderr lines."""
    try:
        deploy_main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


def test_the_deploy_command_writes_a_folder_and_never_replaces_one(student, tmp_path, capsys):
    _, model, _ = student
    weights = tmp_path / "student.pth"
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("student")
    out = tmp_path / "deployed"
    args = ["--config-file", str(STUDENT_CONFIG), "--weights", str(weights), "--output-dir", str(out)]
    assert run_deploy([*args, "MODEL.RPN.POST_NMS_TOPK_TEST", "77"], capsys) == (0, [])
    assert json.loads((out / DEPLOY_FILE).read_text())["rpn"]["post_nms_topk"] == 77
    before = (out / "backbone.ts").read_bytes()
    code, err = run_deploy(args, capsys)
    assert (code, err) == (
        2,
        [f"deploy: error: {out} already holds a deployed model: pass --force to replace it."],
    )
    assert (out / "backbone.ts").read_bytes() == before
    missing = ["--config-file", str(STUDENT_CONFIG), "--weights", str(tmp_path / "nope.pth")]
    code, err = run_deploy([*missing, "--output-dir", str(tmp_path / "x")], capsys)
    assert code == 2 and len(err) == 1 and "nope.pth" in err[0]
    assert not (tmp_path / "x").exists()


def random_boxes(generator: torch.Generator, shape: tuple[int, ...], extent: float = 100.0) -> torch.Tensor:
    xy = torch.rand(*shape, 2, generator=generator) * extent
    wh = torch.rand(*shape, 2, generator=generator) * extent / 2 + extent / 4
    return torch.cat([xy, xy + wh], dim=-1)


@pytest.mark.parametrize("with_classes", [False, True])
def test_static_nms_equals_torchvisions_nms_per_group(with_classes):
    generator = torch.Generator().manual_seed(0)
    groups, num = 6, 80
    boxes = random_boxes(generator, (groups, num))
    scores, order = torch.rand(groups, num, generator=generator).sort(dim=1, descending=True)
    scores[:, -10:] = -torch.inf  # padding: never kept, suppresses nothing
    boxes[:, -10:] = boxes[:, :10]  # ... even where it overlaps kept boxes exactly
    classes = torch.randint(0, 3, (groups, num), generator=generator) if with_classes else None
    keep, converged = matrix_nms(boxes, scores, 0.5, iterations=num, classes=classes)
    assert bool(converged) and keep.dtype == torch.bool and keep.shape == (groups, num)
    for g in range(groups):
        finite = torch.isfinite(scores[g])
        idxs = classes[g][finite] if with_classes else torch.zeros(int(finite.sum()), dtype=torch.int64)
        expected = torch.zeros(num, dtype=torch.bool)
        expected[batched_nms(boxes[g][finite], scores[g][finite], idxs, 0.5)] = True
        assert torch.equal(keep[g], expected)
        assert 0 < int(keep[g].sum()) < int(finite.sum())  # NMS had work to do, and kept some


def test_static_nms_says_when_its_rounds_were_too_few():
    # a chain: box i overlaps box i+1 only; greedy keeps 0, 2, 4, ...; each round settles one more box
    boxes = torch.tensor([[[10.0 * i, 0, 10.0 * i + 15, 10] for i in range(6)]])
    scores = torch.linspace(1, 0.5, 6).unsqueeze(0)
    keep, converged = matrix_nms(boxes, scores, 0.1, iterations=2)
    assert not bool(converged)
    keep, converged = matrix_nms(boxes, scores, 0.1, iterations=7)
    assert bool(converged) and keep[0].tolist() == [True, False, True, False, True, False]


def test_the_static_nms_path_gives_the_exact_paths_detections(student):
    _, _, folder = student
    batch = images([(192, 192), (150, 230), (192, 192)], seed=2)
    exact = DeployedPredictor(folder).predict(batch)
    static = DeployedPredictor(folder, static_nms_rounds=12)
    assert static.detector.nms_iterations == 12
    for e, s in zip(exact, static.predict(batch)):
        assert_same_detections(e["instances"], s["instances"], top=100, atol=1e-4)
    # one round cannot settle random boxes: the predictor notices and runs the batch with exact NMS
    one_round = DeployedPredictor(folder, static_nms_rounds=1)
    for e, s in zip(exact, one_round.predict(batch)):
        assert_same_detections(e["instances"], s["instances"], top=100, atol=1e-4)
    assert one_round.exact_reruns > 0 and static.exact_reruns == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_and_half_precision_match_the_cpu(student):
    _, _, folder = student
    batch = images([(192, 192), (180, 170), (192, 192)])  # one padded batch, copied to the GPU at once
    cpu = DeployedPredictor(folder).predict(batch)
    for kwargs in ({}, {"cuda_graphs": True}, {"half": True}, {"cuda_graphs": True, "half": True}):
        gpu = DeployedPredictor(folder, "cuda", **kwargs)
        for _ in range(2):  # the second call replays the captured graph
            results = gpu.predict(batch)
        for c, g in zip(cpu, results):
            c, g = c["instances"], g["instances"].to("cpu")
            if not kwargs.get("half"):
                assert_same_detections(c, g, top=5)
                continue
            # float16 moves near-tied scores of random weights past each other: each of the CPU's 5 best
            # boxes is found among the GPU's 10 best, same class, within 2 px (trained weights: AP, README)
            for box, cls in zip(c.pred_boxes.tensor[:5], c.pred_classes[:5]):
                close = (g.pred_boxes.tensor[:10] - box).abs().max(dim=1).values <= 2.0
                assert bool((close & (g.pred_classes[:10] == cls)).any())


def test_deployed_latency_has_every_part_and_they_add_up(student):
    from quant_mimic.analysis import deployed_latency
    from quant_mimic.timing import PARTS

    _, _, folder = student
    cost = deployed_latency(
        DeployedPredictor(folder, backend="onnxruntime"), 96, 128, batch=2, repeats=2, warmup=1
    )
    latency = cost["latency_ms"]
    assert set(latency) == {"total", *PARTS} and all(latency[p] > 0 for p in PARTS)
    assert sum(latency[p] for p in PARTS) == pytest.approx(latency["total"], rel=0.05)
    assert cost["batch"] == 2 and cost["input_size"] == [96, 128] and cost["detections"] > 0
    # under a whole-detector graph the detector is one part, timed as "postprocess" (as under CUDA graphs)
    graph = deployed_latency(DeployedPredictor(folder), 96, 128, batch=2, repeats=2, warmup=1)["latency_ms"]
    assert graph["backbone"] == graph["rpn"] == graph["roi_heads"] == 0 < graph["postprocess"]


def test_cuda_graphs_refuse_r_fcn_and_oversized_static_nms_before_touching_a_device(tmp_path):
    cfg, model = random_model(CONFIGS / "shapes" / "student_VGG32_RFCN_scratch.yaml")
    rfcn = DeployedPredictor(export_deployed(cfg, model, tmp_path / "rfcn"))
    with pytest.raises(ValueError, match="R-FCN"):
        rfcn.detector.use_cuda_graphs()
    cfg, model = random_model(STUDENT_CONFIG)
    model.proposal_generator.pre_nms_topk = {True: 3000, False: 3000}  # what PRE_NMS_TOPK_TEST 3000 builds
    wide = DeployedPredictor(export_deployed(cfg, model, tmp_path / "wide"))
    with pytest.raises(ValueError, match="PRE_NMS_TOPK_TEST <= 2000"):
        wide.detector.use_cuda_graphs()
    assert wide.detector.graph is None and rfcn.detector.graph is None
