"""Cost of Quantization Mimic: training steps against a scratch student, and teacher vs student inference.

    python -m quant_mimic_tools.benchmark [--steps 10] [--warmup 3] [--batch 8] [--rounds 3] [--device cpu]
                                          [--threads N] [--sizes 192 600] [--repeats 20] [--infer-rounds 3]
                                          [--teacher-config F] [--student-config F]
                                          [--skip-train] [--skip-infer] [--json out.json]

Training (skip with ``--skip-train``): for one batch of the built-in data set, the median time of a
scratch student step, of the teacher's backbone+FPN forward alone, and of a QM step (student step +
teacher features + mimic loss), the ratio QM / (scratch + 1.3 x teacher forward) (the target is <= 1: no
wasted teacher work), and the peak memory of each step kind (CUDA: max allocated; CPU: growth of the
peak RSS, each kind measured in its own process). The three kinds take turns over ``--rounds`` rounds and
each keeps its median round, so a drift of the machine's speed (seen here: 30% within minutes) hits all.

Inference (skip with ``--skip-infer``): for the teacher and the student config (default
``configs/shapes/teacher_R18_2_FPN.yaml`` and ``configs/shapes/student_R18_16_FPN_scratch.yaml``), at each
of ``--sizes`` (square images fed at that size; default 192, the test size; the paper tests at 600),
fvcore GFLOPs (1 multiply-add = 1 flop) and the median latency, total and per part (preprocess,
backbone+FPN, RPN, ROI heads, post-processing: see :mod:`quant_mimic.analysis`), of each way to run
the model: ``eager`` (detectron2's GeneralizedRCNN) and its deployed form (:mod:`quant_mimic.deploy`)
with each backend (``torchscript``; ``onnxruntime`` and ``onnxruntime_graph`` on the CPU; on CUDA also
``cuda_graphs`` and ``cuda_graphs_fp16``), at each of ``--infer-batches``; then the ratios measured in the
same run. The ways to run take turns over ``--infer-rounds`` rounds (``--repeats`` split over them), each
keeping its median round. Then the
same for the paper's speed row (WIDER FACE VGG-1-4 vs VGG-1-32 R-FCN, grayscale, 768x1024; skip with
``--skip-paper-row``). Weights are random unless ``--teacher-weights`` / ``--student-weights`` are given:
latency does not depend on their values, except post-processing, which grows with the number of boxes
that pass the score threshold (column ``dets``; random weights give many).

``--threads N`` calls ``torch.set_num_threads(N)`` in every process (default: torch's choice). On a
machine whose cores are busy with other work, intra-op threads wait on each other: use 1 there.
``--json`` also writes every number measured to a file.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _measure(
    kind: str, steps: int, warmup: int, batch: int, device: str, teacher_weights: str, dataset: str
) -> dict:
    """Median time of the trainer's real step (``Trainer``: detectron2's step, for QM with the mimic
    loss) on one batch of the built-in data set fed again and again, or of the teacher's forward."""
    import itertools

    import torch
    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.utils.events import EventStorage

    from quant_mimic.compat import feed_batches
    from quant_mimic.config import build_config
    from quant_mimic.engine import Trainer
    from quant_mimic.timing import time_calls

    config = (
        "qm_R_tiny_FPN.yaml"
        if kind in ("qm", "teacher_forward")
        else "shapes/student_R18_16_FPN_scratch.yaml"
    )
    output = tempfile.mkdtemp(prefix="quantmimic-benchmark-")
    opts = ["MODEL.DEVICE", device, "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", teacher_weights,
            "MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES", "0", "SOLVER.IMS_PER_BATCH", str(batch),
            "DATASETS.TRAIN", "('quantmimic_shapes_mini_train',)", "DATALOADER.NUM_WORKERS", "0",
            "OUTPUT_DIR", output]  # fmt: skip
    cfg = build_config(str(CONFIGS / config), opts)
    trainer = Trainer(cfg)
    mapper = DatasetMapper(cfg, is_train=True)
    dicts = copy.deepcopy(DatasetCatalog.get(dataset)[:batch])
    for d in dicts:  # timing does not depend on class ids: fold the data set's classes onto the config's
        for a in d.get("annotations", []):
            a["category_id"] %= cfg.MODEL.ROI_HEADS.NUM_CLASSES
    data = [mapper(d) for d in dicts]
    feed_batches(trainer._trainer, itertools.repeat(data))
    model = trainer.model

    def step(lap: Callable[[str], None]) -> None:
        if kind == "teacher_forward":
            model.teacher.features(data)
        else:
            trainer.run_step()
        trainer.iter += 1

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with EventStorage() as storage:
        trainer.storage, trainer.iter = storage, 0
        median_s = time_calls(step, steps, warmup, device).median_s()
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    shutil.rmtree(output, ignore_errors=True)
    return {"kind": kind, "median_s": median_s, "peak_mb": peak_mb, "steps": steps}


def _teacher_weights(folder: str) -> str:
    """Random teacher weights of the right shapes (of qm_R_tiny_FPN.yaml's teacher): timing does not
    depend on their values."""
    from quant_mimic.config import build_config, load_teacher_config

    from .estimate import random_teacher_weights

    cfg = build_config(str(CONFIGS / "qm_R_tiny_FPN.yaml"), ["MODEL.DEVICE", "cpu"])
    return random_teacher_weights(load_teacher_config(cfg), folder)


GRAPH_UNTIMED_PARTS = ("backbone", "rpn", "roi_heads")  # inside a whole-detector graph: no laps


def measure_training(args: argparse.Namespace) -> dict:
    """Each training step kind in its own process; returns their results and the ratios."""
    kinds = ("scratch", "teacher_forward", "qm")
    rounds: dict[str, list[dict]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        weights = _teacher_weights(tmp)
        for _ in range(args.rounds):  # the kinds take turns, so a drift of the machine's speed hits all
            for kind in kinds:
                cmd = [sys.executable, "-m", "quant_mimic_tools.benchmark", "--steps", str(args.steps)]
                cmd += ["--warmup", str(args.warmup), "--batch", str(args.batch), "--device", args.device]
                cmd += ["--threads", str(args.threads), "--data", args.data]
                cmd += [a for spec in args.dataset for a in ("--dataset", spec)]
                out = subprocess.run(
                    [*cmd, "--_child", kind, weights], capture_output=True, text=True, check=True
                )
                rounds[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = {
        kind: {**median_round(runs, lambda r: r["median_s"], "round_medians_s"), "rounds": len(runs)}
        for kind, runs in rounds.items()
    }
    scratch, teacher, qm = (results[k]["median_s"] for k in kinds)
    results["ratios"] = {
        "qm_over_scratch": qm / scratch,
        "qm_over_scratch_plus_teacher": qm / (scratch + teacher),
        "qm_over_scratch_plus_1.3_teacher": qm / (scratch + 1.3 * teacher),
        "qm_over_scratch_peak_memory": results["qm"]["peak_mb"] / max(results["scratch"]["peak_mb"], 1),
    }
    return results


def print_training(args: argparse.Namespace, results: dict) -> None:
    print(
        f"training: device {args.device}, batch {args.batch}, median of {args.steps} steps after "
        f"{args.warmup} warm-up; each kind's median round of {args.rounds}, the kinds taking turns"
    )
    print(f"{'step':<28}{'median s':>10}{'peak MB':>10}")
    for kind, label in [("scratch", "scratch student step"), ("teacher_forward", "teacher backbone+FPN fwd"),
                        ("qm", "QM step")]:  # fmt: skip
        print(f"{label:<28}{results[kind]['median_s']:>10.3f}{results[kind]['peak_mb']:>10.0f}")
    ratios = results["ratios"]
    print(f"QM step / scratch step                     = {ratios['qm_over_scratch']:.2f}")
    print(f"QM step / (scratch + teacher forward)      = {ratios['qm_over_scratch_plus_teacher']:.2f}")
    print(
        f"QM step / (scratch + 1.3 x teacher forward) = {ratios['qm_over_scratch_plus_1.3_teacher']:.2f}"
        "  (target <= 1)"
    )
    print(f"QM peak memory / scratch peak memory       = {ratios['qm_over_scratch_peak_memory']:.2f}")


# The paper's speed row (Sec. 4.3): VGG-1-4 vs VGG-1-32 R-FCN, grayscale, Titan X, longer side 1024.
PAPER_ROW = {"teacher_ms": 30.2, "student_ms": 9.6, "height": 768, "width": 1024}


def _load(cfg, weights: str | None):
    """The model of ``cfg`` in eval mode: ``weights`` loaded (a QM checkpoint's student too), else random."""
    import torch
    from detectron2.modeling import build_model

    from quant_mimic.checkpoint import StudentCheckpointer

    torch.manual_seed(0)
    model = build_model(cfg)
    if weights:
        StudentCheckpointer(model).load(weights)
    return model.eval()


def measure_pair(
    args: argparse.Namespace, configs: dict, weights: dict, sizes: list, peers: dict | None = None
) -> dict:
    """Eager and deployed (each backend) cost of teacher and student at each size and batch, and ratios;
    with ``peers`` (name -> :class:`quant_mimic.peers.PeerTimer`), theirs too, in the same rounds."""
    import torch

    from quant_mimic.analysis import deployed_latency, model_cost
    from quant_mimic.config import build_config
    from quant_mimic.deploy import DeployedPredictor, export_deployed
    from quant_mimic.deploy.runtime import (
        DEPLOY_FILE,
        GRAPH_BACKEND,
        ONNX_FILES,
        choose_backend,
        onnx_session,
    )

    cfgs = {name: build_config(path, ["MODEL.DEVICE", args.device]) for name, path in configs.items()}
    models = {name: _load(cfg, weights.get(name)) for name, cfg in cfgs.items()}
    results: dict = {"configs": configs, "weights": {k: weights.get(k) or "random" for k in configs}}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {name: export_deployed(cfgs[name], models[name], Path(tmp) / name) for name in cfgs}
        predictors, backbone_alone = {}, {}
        for name, folder in folders.items():
            predictors[name] = {"eager": None}
            spec = json.loads((folder / DEPLOY_FILE).read_text())
            backends = ["torchscript"]
            if args.device == "cpu":
                auto = choose_backend("auto", spec, models[name].device)
                backends += {
                    "onnxruntime": ["onnxruntime"],
                    GRAPH_BACKEND: ["onnxruntime", GRAPH_BACKEND],
                }.get(auto, [])
            for backend in backends:
                predictors[name][backend] = DeployedPredictor(folder, args.device, backend=backend)
            if GRAPH_BACKEND in backends:  # the graph has no laps: its backbone+FPN is timed alone beside it
                backbone_alone[name] = onnx_session(
                    str(folder / ONNX_FILES["backbone"]), torch.get_num_threads(), spinning=True
                )
            if args.device.startswith("cuda") and spec["roi"]["kind"] == "fast_rcnn":  # R-FCN: no graphs
                predictors[name]["cuda_graphs"] = DeployedPredictor(folder, args.device, cuda_graphs=True)
                predictors[name]["cuda_graphs_fp16"] = DeployedPredictor(
                    folder, args.device, cuda_graphs=True, half=True
                )
        for height, width in sizes:
            key = f"{height}x{width}" if height != width else str(height)
            row: dict = {}
            # every way to run takes turns over --infer-rounds rounds (a drift of the machine's speed hits
            # them all alike); each keeps its median round
            per_round = passes_per_round(args)
            rounds: dict = {name: {} for name in cfgs}
            alone: dict = {}  # the graph backend's backbone+FPN network alone, ms per round
            peer_rounds: dict = {name: {} for name in peers or {}}
            for _ in range(args.infer_rounds):
                for name, cfg in cfgs.items():
                    rounds[name].setdefault("eager", []).append(
                        model_cost(
                            cfg, height, width, repeats=per_round, warmup=args.warmup, model=models[name]
                        )
                    )
                    for kind, predictor in predictors[name].items():
                        if predictor is None:
                            continue
                        for batch in args.infer_batches:
                            label = kind if batch == 1 else f"{kind}_b{batch}"
                            repeats = per_round if batch == 1 else max(2, per_round // 4)
                            try:
                                measured = deployed_latency(
                                    predictor, height, width, batch, repeats, args.warmup
                                )
                            except RuntimeError as e:  # one way to run failing must not hide the others
                                measured = {"error": " ".join(str(e).split())[:200]}
                            rounds[name].setdefault(label, []).append(measured)
                    if name in backbone_alone:  # right after the graph, in the same round
                        predictor = predictors[name][GRAPH_BACKEND]
                        shape = (1, len(cfg.MODEL.PIXEL_MEAN), *predictor.padded_size(height, width))
                        alone.setdefault(name, []).append(
                            session_latency(backbone_alone[name], shape, per_round, args.warmup)
                        )
                for name, peer in (peers or {}).items():  # after ours, in the same round
                    for kind in peer.kinds():
                        peer_rounds[name].setdefault(kind, []).append(
                            peer.latency(kind, height, width, per_round, args.warmup)
                        )
            for name in cfgs:
                row[name] = {
                    label: median_round(runs, lambda r: r["latency_ms"]["total"], "round_totals_ms")
                    for label, runs in rounds[name].items()
                }
            row["backbone_alone_ms"] = {name: statistics.median(ms) for name, ms in alone.items()}
            row["ratios"] = pair_ratios(row)
            if peers:
                row["peers"] = {
                    name: {
                        kind: median_round(runs, lambda r: r["latency_ms"]["total"], "round_totals_ms")
                        for kind, runs in peer_rounds[name].items()
                    }
                    for name in peers
                }
                for name, peer in peers.items():  # size and FLOPs beside the eager run, as ours
                    row["peers"][name]["eager"].update(peer.cost(height, width))
                row["peer_ratios"] = peer_ratios(row)
            results[key] = row
    return results


def peer_weight_files(folder: str | None) -> dict[str, str]:
    """Each peer's trained weights in ``folder`` (``<model>_seed<N>/model_final.pth`` of the lowest N);
    {} without a folder.

    Raises:
        QuantMimicInputError: a peer has none there.
    """
    from quant_mimic.errors import QuantMimicInputError
    from quant_mimic.peers import PEERS

    if not folder:
        return {}
    files = {}
    for name in PEERS:
        found = list(Path(folder).glob(f"{name}_seed*/model_final.pth"))
        if not found:
            raise QuantMimicInputError(
                f"--peer-weights {folder} has no {name}_seed<N>/model_final.pth: train it with python -m "
                f"quant_mimic_tools.peers --models {name} --output-dir {folder}."
            )
        files[name] = str(min(found, key=lambda p: int(p.parent.name.rsplit("seed", 1)[1])))
    return files


def build_peers(args: argparse.Namespace) -> dict:
    """torchvision's peers (:data:`quant_mimic.peers.PEERS`) for the built-in data set's classes, random
    weights (seeded) unless ``--peer-weights DIR`` holds trained ones; name -> PeerTimer."""
    import torch

    from quant_mimic.data import SHAPE_CLASSES
    from quant_mimic.peers import PEERS, PeerTimer, build_peer

    files = peer_weight_files(args.peer_weights)
    timers = {}
    for name in PEERS:
        weights, num_classes, state = "random", len(SHAPE_CLASSES), None
        if name in files:
            weights = files[name]
            state = torch.load(weights, map_location="cpu", weights_only=False)
            num_classes = len(state["peer"]["classes"])
        torch.manual_seed(0)
        model = build_peer(name, num_classes, bool(state and state["peer"]["weights_backbone"]))
        if state is not None:
            model.load_state_dict(state["model"])
        timers[name] = PeerTimer(name, model, weights, args.device)
    return timers


def peer_ratios(row: dict) -> dict:
    """Each peer against the student: eager / eager and fastest deployed / fastest deployed."""
    ms = lambda m, k: m[k]["latency_ms"]["total"]  # noqa: E731
    student = row["student"]
    best = best_deployed(student)
    ratios = {}
    for name, m in row["peers"].items():
        deployed = "onnxruntime" if "onnxruntime" in m and "error" not in m["onnxruntime"] else "eager"
        ratios[name] = {
            "eager_peer/eager_student": ms(m, "eager") / ms(student, "eager"),
            "deployed_peer/deployed_student": ms(m, deployed) / ms(student, best),
            "gflops_peer/student": m["eager"]["gflops"] / student["eager"]["gflops"],
            "deployed": {"peer": deployed, "student": best},
        }
    return ratios


def session_latency(session: Any, shape: tuple, repeats: int, warmup: int) -> float:
    """Median ms of an ONNX Runtime session of one input (the deployed backbone network) on zeros of
    ``shape``."""
    import numpy as np

    from quant_mimic.timing import time_calls

    feeds = {session.get_inputs()[0].name: np.zeros(shape, dtype=np.float32)}
    return 1000 * time_calls(lambda lap: session.run(None, feeds), repeats, warmup).median_s()


def median_round(runs: list[dict], time: Callable[[dict], float], record: str) -> dict:
    """The round whose ``time`` is the median (an error if any round failed), with every round's time
    under ``record``."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=time)
    return {**ordered[len(ordered) // 2], record: [time(r) for r in runs]}


def passes_per_round(args: argparse.Namespace) -> int:
    """Timed inference passes of each way to run in each round: ``--repeats`` split over the rounds."""
    return max(2, math.ceil(args.repeats / args.infer_rounds))


def best_deployed(measured: dict) -> str:
    """The deployed kind with the lowest batch-1 latency."""
    kinds = [k for k in measured if k != "eager" and "_b" not in k and "error" not in measured[k]]
    return min(kinds, key=lambda k: measured[k]["latency_ms"]["total"])


def pair_ratios(row: dict) -> dict:
    t, s = row["teacher"], row["student"]
    best_t, best_s = best_deployed(t), best_deployed(s)
    ms = lambda m, k: m[k]["latency_ms"]["total"]  # noqa: E731
    # a graph run (whole detector in one part) has no backbone lap: the CPU graph's backbone network is
    # timed alone in the same rounds; a CUDA graph's is taken from its networks run one by one
    networks_of = {"cuda_graphs": "torchscript", "cuda_graphs_fp16": "torchscript"}
    if best_s == "onnxruntime_graph" and "student" in row.get("backbone_alone_ms", {}):
        backbone_ms = row["backbone_alone_ms"]["student"]
    else:
        backbone_ms = s.get(networks_of.get(best_s, best_s), s[best_s])["latency_ms"]["backbone"]
    ratios = {
        "gflops_teacher/student": t["eager"]["gflops"] / s["eager"]["gflops"],
        "eager_teacher/eager_student": ms(t, "eager") / ms(s, "eager"),
        "deployed_teacher/deployed_student": ms(t, best_t) / ms(s, best_s),
        "eager_student/deployed_student": ms(s, "eager") / ms(s, best_s),
        "student_share_outside_backbone": 1 - backbone_ms / ms(s, best_s),
        # where time followed FLOPs, this would be the time share above (RoIAlign, NMS and top-k count 0)
        "student_gflops_share_outside_backbone": 1 - s["eager"]["backbone_gflops"] / s["eager"]["gflops"],
        "best_deployed": {"teacher": best_t, "student": best_s},
    }
    if "onnxruntime" in s and "torchscript" in s:
        ratios["student_torchscript/onnxruntime"] = ms(s, "torchscript") / ms(s, "onnxruntime")
        ratios["teacher_torchscript/onnxruntime"] = ms(t, "torchscript") / ms(t, "onnxruntime")
    if "onnxruntime_graph" in s and "onnxruntime_graph" in t:
        ratios["student_onnxruntime/onnxruntime_graph"] = ms(s, "onnxruntime") / ms(s, "onnxruntime_graph")
        ratios["teacher_onnxruntime/onnxruntime_graph"] = ms(t, "onnxruntime") / ms(t, "onnxruntime_graph")
    for kind in t:
        if "_b" in kind and "error" not in t[kind] and "error" not in s.get(kind, {"error": ""}):
            batch = int(kind.rsplit("_b", 1)[1])
            ratios[f"throughput_{kind}_student/teacher"] = ms(t, kind) / ms(s, kind)
            ratios[f"images_per_s_{kind}"] = {
                n: 1000 * batch / ms(row[n], kind) for n in ("teacher", "student")
            }
    return ratios


def measure_inference(args: argparse.Namespace) -> dict:
    """The built-in pair at each of ``--sizes`` and, unless ``--skip-paper-row``, the paper's speed row."""
    configs = {"teacher": args.teacher_config, "student": args.student_config}
    weights = {"teacher": args.teacher_weights, "student": args.student_weights}
    peers = build_peers(args) if args.peers else None
    results = {"shapes": measure_pair(args, configs, weights, [(s, s) for s in args.sizes], peers)}
    if not args.skip_paper_row:
        paper = {"teacher": str(CONFIGS / "wider_face" / "teacher_VGG4_RFCN.yaml"),
                 "student": str(CONFIGS / "wider_face" / "student_VGG32_RFCN_scratch.yaml")}  # fmt: skip
        results["paper_row"] = measure_pair(args, paper, {}, [(PAPER_ROW["height"], PAPER_ROW["width"])])
    return results


def print_pair(args: argparse.Namespace, results: dict, title: str) -> None:
    from quant_mimic.timing import PART_LABELS, PARTS

    print(title)
    print(f"  teacher {results['configs']['teacher']} ({results['weights']['teacher']} weights)")
    print(f"  student {results['configs']['student']} ({results['weights']['student']} weights)")
    header = f"{'size':>9}  {'model':<8}{'run':<20}{'GFLOPs':>8}{'total':>9}"
    header += "".join(f"{PART_LABELS.get(p, p):>10}" for p in PARTS) + f"{'dets':>6}{'img/s':>8}"
    print(header)
    for key, row in results.items():
        if key in ("configs", "weights"):
            continue
        for name in ("teacher", "student"):
            for kind, c in row[name].items():
                if "error" in c:
                    print(f"{key:>9}  {name:<8}{kind:<20}failed: {c['error']}")
                    continue
                ms = c["latency_ms"]
                batch = c.get("batch", 1)
                gflops = f"{c['gflops']:>8.3f}" if kind == "eager" else f"{'':>8}"
                line = f"{key:>9}  {name:<8}{kind:<20}{gflops}{ms['total']:>9.1f}"
                # a graph is one call: its parts have no laps of their own ("-"), all in postproc
                whole = "graph" in kind
                line += "".join(
                    f"{'-':>10}" if whole and part in GRAPH_UNTIMED_PARTS else f"{ms[part]:>10.1f}"
                    for part in PARTS
                )
                line += f"{c['detections']:>6}{1000 * batch / ms['total']:>8.0f}"
                print(line)
        alone = row.get("backbone_alone_ms", {})
        if alone:
            print(
                f"{key:>9}  graph rows: the whole detector in one call, timed as postproc; their backbone+FPN "
                f"network alone, in the same rounds: teacher {alone.get('teacher', math.nan):.1f} ms, student "
                f"{alone.get('student', math.nan):.1f} ms"
            )
        if "peers" in row:
            print_peers(key, row)
        r = row["ratios"]
        best = r["best_deployed"]
        print(
            f"{key:>9}  ratios (deployed = the fastest deployed run: teacher {best['teacher']}, student {best['student']})"
        )
        print(f"{'':>11}GFLOPs teacher / student                 {r['gflops_teacher/student']:7.2f}")
        print(f"{'':>11}eager teacher / eager student            {r['eager_teacher/eager_student']:7.2f}")
        print(
            f"{'':>11}deployed teacher / deployed student      {r['deployed_teacher/deployed_student']:7.2f}"
        )
        print(f"{'':>11}eager student / deployed student         {r['eager_student/deployed_student']:7.2f}")
        print(
            f"{'':>11}student time outside backbone+FPN        {100 * r['student_share_outside_backbone']:6.1f}%"
            + (
                "  (backbone: its network alone, in the same rounds)"
                if best["student"] == "onnxruntime_graph"
                else "  (backbone: its networks' run, one by one)"
                if "graph" in best["student"]
                else ""
            )
        )
        print(
            f"{'':>11}student GFLOPs outside backbone+FPN      "
            f"{100 * r['student_gflops_share_outside_backbone']:6.1f}%  (RPN and box heads: the time share if "
            "time followed FLOPs)"
        )
        if "student_onnxruntime/onnxruntime_graph" in r:
            print(
                f"{'':>11}networks one by one / whole graph (student) "
                f"{r['student_onnxruntime/onnxruntime_graph']:4.2f}"
            )
            print(
                f"{'':>11}networks one by one / whole graph (teacher) "
                f"{r['teacher_onnxruntime/onnxruntime_graph']:4.2f}"
            )
        if "student_torchscript/onnxruntime" in r:
            print(
                f"{'':>11}TorchScript / ONNX Runtime (student)     {r['student_torchscript/onnxruntime']:7.2f}"
            )
            print(
                f"{'':>11}TorchScript / ONNX Runtime (teacher)     {r['teacher_torchscript/onnxruntime']:7.2f}"
            )
        for k, v in r.items():
            if k.startswith("images_per_s_"):
                print(
                    f"{'':>11}{k[len('images_per_s_') :]}: teacher {v['teacher']:.0f} img/s, student {v['student']:.0f} img/s"
                )


def print_peers(key: str, row: dict) -> None:
    """The peers' rows of one size: the size they compute on, parameters, GFLOPs, latency and its parts,
    then each against the student."""
    from quant_mimic.peers import PEER_PARTS
    from quant_mimic.timing import PART_LABELS

    print(
        f"{key:>9}  torchvision peers, same rounds (heads: Faster R-CNN's RPN + box head, SSD's head; "
        "postproc: anchors, decoding, NMS, rescale)"
    )
    header = (
        f"{'size':>9}  {'model':<38}{'run':<13}{'computes at':>12}{'M params':>9}{'GFLOPs':>8}{'total':>9}"
    )
    print(header + "".join(f"{PART_LABELS.get(p, p):>10}" for p in PEER_PARTS) + f"{'dets':>6}")
    for name, kinds in row["peers"].items():
        cost = kinds["eager"]
        for kind, c in kinds.items():
            if "error" in c:
                print(f"{key:>9}  {name:<38}{kind:<13}failed: {c['error']}")
                continue
            ms = c["latency_ms"]
            size = "x".join(map(str, cost["computes_at"])) if kind == "eager" else ""
            numbers = (
                f"{cost['params'] / 1e6:>9.2f}{cost['gflops']:>8.3f}" if kind == "eager" else f"{'':>17}"
            )
            line = f"{key:>9}  {name:<38}{kind:<13}{size:>12}{numbers}{ms['total']:>9.1f}"
            line += "".join(f"{ms[p]:>10.1f}" if p in ms else f"{'-':>10}" for p in PEER_PARTS)
            print(line + f"{c['detections']:>6}")
    for name, r in row["peer_ratios"].items():
        d = r["deployed"]
        print(
            f"{'':>11}{name}: eager / eager student {r['eager_peer/eager_student']:.2f}, {d['peer']} / "
            f"student {d['student']} {r['deployed_peer/deployed_student']:.2f}, GFLOPs / student "
            f"{r['gflops_peer/student']:.1f}"
        )


def print_inference(args: argparse.Namespace, results: dict) -> None:
    import torch

    print(
        f"inference: device {args.device}, {torch.get_num_threads()} thread(s); {args.infer_rounds} rounds in which "
        f"every way to run takes its turn, each round the median of {passes_per_round(args)} "
        f"passes after {args.warmup} warm-up; each way's median round; times in ms (per batch); eager = "
        "detectron2's GeneralizedRCNN"
    )
    print_pair(args, results["shapes"], "built-in data set pair")
    if "paper_row" in results:
        print_pair(args, results["paper_row"], "the paper's speed row: WIDER FACE R-FCN, grayscale, 768x1024")
        r = results["paper_row"]["768x1024"]["ratios"]
        print(
            f"{'':>11}paper (Titan X): VGG-1-4 {PAPER_ROW['teacher_ms']} ms, VGG-1-32 {PAPER_ROW['student_ms']} ms, "
            f"ratio {PAPER_ROW['teacher_ms'] / PAPER_ROW['student_ms']:.2f}; ours deployed: "
            f"ratio {r['deployed_teacher/deployed_student']:.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    from quant_mimic.data.user import add_dataset_argument, register_user_datasets
    from quant_mimic.errors import QuantMimicInputError, one_line

    from .cli import make_parser

    parser = make_parser("benchmark", __doc__)
    parser.add_argument(
        "--data",
        default="quantmimic_shapes_mini_train",
        metavar="NAME",
        help="the data set whose first --batch images make the training steps' batch (a built-in name or a "
        "--dataset NAME)",
    )
    add_dataset_argument(parser)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per kind")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps / passes first (oneDNN / CUDA warm-up)"
    )
    parser.add_argument("--batch", type=int, default=8, help="images per training step")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="training: rounds of (scratch, teacher forward, QM), each its own process",
    )
    parser.add_argument("--device", default="cpu", help="where the models run: cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[192], metavar="PX", help="inference image sizes (square, px)"
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed inference passes per model and size")
    parser.add_argument(
        "--infer-rounds",
        type=int,
        default=3,
        help="inference: rounds the ways to run take turns in (repeats split over them)",
    )
    parser.add_argument(
        "--teacher-config",
        default=str(CONFIGS / "shapes" / "teacher_R18_2_FPN.yaml"),
        metavar="FILE",
        help="the teacher's config, for inference",
    )
    parser.add_argument(
        "--student-config",
        default=str(CONFIGS / "shapes" / "student_R18_16_FPN_scratch.yaml"),
        metavar="FILE",
        help="the student's config, for inference",
    )
    parser.add_argument("--teacher-weights", metavar="FILE", help="trained teacher weights (default: random)")
    parser.add_argument(
        "--student-weights",
        metavar="FILE",
        help="trained student weights, a QM checkpoint too (default: random)",
    )
    parser.add_argument(
        "--infer-batches",
        type=int,
        nargs="+",
        default=[1],
        metavar="N",
        help="deployed batch sizes (e.g. 1 32 on a GPU)",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also time torchvision's ssdlite320_mobilenet_v3_large and fasterrcnn_mobilenet_v3_large_320_fpn "
        "(eager and ONNX Runtime) in the built-in pair's rounds",
    )
    parser.add_argument(
        "--peer-weights",
        metavar="DIR",
        help="with --peers: trained peers, DIR/<model>_seed<N>/model_final.pth of the lowest N "
        "(python -m quant_mimic_tools.peers; default: random weights)",
    )
    parser.add_argument("--skip-paper-row", action="store_true", help="no WIDER FACE VGG R-FCN speed row")
    parser.add_argument("--skip-train", action="store_true", help="no training-step measurements")
    parser.add_argument("--skip-infer", action="store_true", help="no inference measurements")
    parser.add_argument("--json", metavar="FILE", help="also write every number measured to FILE")
    parser.add_argument("--_child", nargs=2, metavar=("KIND", "WEIGHTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    import quant_mimic  # noqa: F401  (registers the data sets)

    try:
        register_user_datasets(args.dataset)
    except QuantMimicInputError as e:
        parser.error(one_line(e))
    if args._child:
        kind, weights = args._child
        print(
            json.dumps(_measure(kind, args.steps, args.warmup, args.batch, args.device, weights, args.data))
        )
        return
    if args.skip_train and args.skip_infer:
        parser.error("--skip-train and --skip-infer together leave nothing to measure")
    if args.peer_weights and not args.peers:
        parser.error("--peer-weights times trained peers: add --peers")
    try:
        peer_weight_files(args.peer_weights)
    except QuantMimicInputError as e:
        parser.error(one_line(e))
    results = {}
    if not args.skip_train:
        results["train"] = measure_training(args)
        print_training(args, results["train"])
    if not args.skip_infer:
        results["infer"] = measure_inference(args)
        print_inference(args, results["infer"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
