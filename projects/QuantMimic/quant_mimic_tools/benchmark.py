"""Cost of Quantization Mimic: training steps against a scratch student, and teacher vs student inference.

    python -m quant_mimic_tools.benchmark [--steps 10] [--warmup 3] [--batch 8] [--device cpu] [--threads N]
                                          [--sizes 192 600] [--repeats 20]
                                          [--teacher-config F] [--student-config F]
                                          [--skip-train] [--skip-infer] [--json out.json]

Training (skip with ``--skip-train``): for one batch of the built-in data set, the median time of a
scratch student step, of the teacher's backbone+FPN forward alone, and of a QM step (student step +
teacher features + mimic loss), the ratio QM / (scratch + 1.3 x teacher forward) (the target is <= 1: no
wasted teacher work), and the peak memory of each step kind (CUDA: max allocated; CPU: growth of the
peak RSS, each kind measured in its own process).

Inference (skip with ``--skip-infer``): for the teacher and the student config (default
``configs/shapes/teacher_R18_2_FPN.yaml`` and ``configs/shapes/student_R18_16_FPN_scratch.yaml``), at each
of ``--sizes`` (square images fed at that size; default 192, the test size; the paper tests at 600),
a table of parameters, fvcore GFLOPs (1 multiply-add = 1 flop) and the median latency of one image,
total and per part (preprocess, backbone+FPN, RPN, ROI heads, post-processing: see
:mod:`quant_mimic.analysis`), then a ``teacher/student`` row of the ratios measured in the same run.
Weights are random: latency does not depend on their values, except post-processing, which grows with
the number of boxes that pass the score threshold (column ``dets``; random weights give many).

``--threads N`` calls ``torch.set_num_threads(N)`` in every process (default: torch's choice). On a
machine whose cores are busy with other work, intra-op threads wait on each other: use 1 there.
``--json`` also writes every number measured to a file.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _measure(kind: str, steps: int, warmup: int, batch: int, device: str, teacher_weights: str) -> dict:
    import torch
    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from quant_mimic.engine import build_config
    from quant_mimic.modeling import MIMIC_FEATURES_KEY, MimicLoss

    config = (
        "qm_R_tiny_FPN.yaml"
        if kind in ("qm", "teacher_forward")
        else "shapes/student_R18_16_FPN_scratch.yaml"
    )
    opts = ["MODEL.DEVICE", device, "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", teacher_weights]
    cfg = build_config(str(CONFIGS / config), opts)
    model = build_model(cfg).train()
    mapper = DatasetMapper(cfg, is_train=True)
    data = [mapper(d) for d in DatasetCatalog.get("quantmimic_shapes_mini_train")[:batch]]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    mimic_loss = MimicLoss(cfg) if kind == "qm" else None

    def step():
        if kind == "teacher_forward":
            model.teacher.features(data)
            return
        losses = model(data)
        if mimic_loss is not None:
            losses.update(mimic_loss.loss_and_matching_ratio(losses.pop(MIMIC_FEATURES_KEY))[0])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    with EventStorage():
        for i in range(warmup + steps):
            sync()
            start = time.perf_counter()
            step()
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    return {"kind": kind, "median_s": statistics.median(times), "peak_mb": peak_mb, "steps": steps}


def _teacher_weights(folder: str) -> str:
    """Random teacher weights of the right shapes: timing does not depend on their values."""
    import torch
    from detectron2.modeling import build_model

    from quant_mimic.engine import build_config
    from quant_mimic.modeling.meta_arch import load_teacher_config

    cfg = build_config(str(CONFIGS / "qm_R_tiny_FPN.yaml"), ["MODEL.DEVICE", "cpu"])
    teacher = build_model(load_teacher_config(cfg))
    path = str(Path(folder) / "teacher.pth")
    torch.save({"model": teacher.state_dict()}, path)
    return path


PARTS_LABELS = [("preprocess", "preproc"), ("backbone", "backbone"), ("rpn", "rpn"), ("roi_heads", "roi_heads"),
                ("postprocess", "postproc")]  # fmt: skip


def measure_training(args: argparse.Namespace) -> dict:
    """Each training step kind in its own process; returns their results and the ratios."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = _teacher_weights(tmp)
        for kind in ("scratch", "teacher_forward", "qm"):
            cmd = [sys.executable, "-m", "quant_mimic_tools.benchmark", "--steps", str(args.steps)]
            cmd += ["--warmup", str(args.warmup), "--batch", str(args.batch), "--device", args.device]
            cmd += ["--threads", str(args.threads)]
            out = subprocess.run(
                [*cmd, "--_child", kind, weights], capture_output=True, text=True, check=True
            )
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    scratch, teacher, qm = (results[k]["median_s"] for k in ("scratch", "teacher_forward", "qm"))
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
        f"{args.warmup} warm-up"
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


def measure_inference(args: argparse.Namespace) -> dict:
    """Teacher and student :func:`~quant_mimic.analysis.model_cost` at each size, and their ratios."""
    from quant_mimic.analysis import PARTS, model_cost
    from quant_mimic.engine import build_config

    configs = {"teacher": args.teacher_config, "student": args.student_config}
    cfgs = {name: build_config(path, ["MODEL.DEVICE", args.device]) for name, path in configs.items()}
    results: dict = {"configs": configs}
    for size in args.sizes:
        costs = {
            name: model_cost(cfg, size, size, repeats=args.repeats, warmup=args.warmup)
            for name, cfg in cfgs.items()
        }
        t, s = costs["teacher"], costs["student"]
        ratio = {
            "params": t["params"] / s["params"],
            "backbone_params": t["backbone_params"] / s["backbone_params"],
            "gflops": t["gflops"] / s["gflops"],
        }
        for part in ("total", *PARTS):
            ratio[f"latency_{part}"] = t["latency_ms"][part] / max(s["latency_ms"][part], 1e-9)
        results[str(size)] = {**costs, "teacher/student": ratio}
    return results


def print_inference(args: argparse.Namespace, results: dict) -> None:
    first = results[str(args.sizes[0])]["student"]
    print(
        f"inference: device {first['device']}, {first['threads']} thread(s), one image, median of "
        f"{args.repeats} passes after {args.warmup} warm-up, random weights"
    )
    print(f"  teacher {results['configs']['teacher']}")
    print(f"  student {results['configs']['student']}")
    print("  (times in ms; post-processing grows with the boxes that pass the score threshold: dets)")
    header = f"{'size':>5}  {'model':<16}{'params M':>9}{'bb par M':>9}{'GFLOPs':>8}{'total':>9}"
    header += "".join(f"{label:>10}" for _, label in PARTS_LABELS) + f"{'dets':>6}"
    print(header)
    for size in args.sizes:
        row = results[str(size)]
        for name in ("teacher", "student"):
            c, ms = row[name], row[name]["latency_ms"]
            line = f"{size:>5}  {name:<16}{c['params'] / 1e6:>9.3f}{c['backbone_params'] / 1e6:>9.3f}"
            line += f"{c['gflops']:>8.3f}{ms['total']:>9.1f}"
            line += "".join(f"{ms[part]:>10.1f}" for part, _ in PARTS_LABELS) + f"{c['detections']:>6}"
            print(line)
        r = row["teacher/student"]
        line = f"{size:>5}  {'teacher/student':<16}{r['params']:>9.2f}{r['backbone_params']:>9.2f}"
        line += f"{r['gflops']:>8.2f}{r['latency_total']:>9.2f}"
        line += "".join(f"{r['latency_' + part]:>10.2f}" for part, _ in PARTS_LABELS)
        print(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per kind")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps / passes first (oneDNN / CUDA warm-up)"
    )
    parser.add_argument("--batch", type=int, default=8, help="images per training step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[192], help="inference image sizes (square, px)"
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed inference passes per model and size")
    parser.add_argument("--teacher-config", default=str(CONFIGS / "shapes" / "teacher_R18_2_FPN.yaml"))
    parser.add_argument(
        "--student-config", default=str(CONFIGS / "shapes" / "student_R18_16_FPN_scratch.yaml")
    )
    parser.add_argument("--skip-train", action="store_true", help="no training-step measurements")
    parser.add_argument("--skip-infer", action="store_true", help="no inference measurements")
    parser.add_argument("--json", metavar="FILE", help="also write every number measured to FILE")
    parser.add_argument("--_child", nargs=2, metavar=("KIND", "WEIGHTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    import quant_mimic  # noqa: F401  (registers the data sets)

    if args._child:
        kind, weights = args._child
        print(json.dumps(_measure(kind, args.steps, args.warmup, args.batch, args.device, weights)))
        return
    if args.skip_train and args.skip_infer:
        parser.error("--skip-train and --skip-infer together leave nothing to measure")
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
