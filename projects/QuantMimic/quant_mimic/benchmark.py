"""Training-step cost of Quantization Mimic against a scratch student, measured side by side.

    python -m quant_mimic.benchmark [--steps 10] [--warmup 3] [--batch 8] [--device cpu]

Prints, for one batch of the built-in data set: the median time of a scratch student step, of the
teacher's backbone+FPN forward alone, and of a QM step (student step + teacher features + mimic
loss), the ratio QM / (scratch + 1.3 x teacher forward) (the target is <= 1: no wasted teacher work),
and the peak memory of each step kind (CUDA: max allocated; CPU: growth of the peak RSS, each kind
measured in its own process).
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per kind")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (oneDNN / CUDA warm-up)")
    parser.add_argument("--batch", type=int, default=8, help="images per step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--_child", nargs=2, metavar=("KIND", "WEIGHTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import quant_mimic  # noqa: F401  (registers the data sets)

    if args._child:
        kind, weights = args._child
        print(json.dumps(_measure(kind, args.steps, args.warmup, args.batch, args.device, weights)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = _teacher_weights(tmp)
        for kind in ("scratch", "teacher_forward", "qm"):
            cmd = [sys.executable, "-m", "quant_mimic.benchmark", "--steps", str(args.steps)]
            cmd += ["--warmup", str(args.warmup), "--batch", str(args.batch), "--device", args.device]
            out = subprocess.run(
                [*cmd, "--_child", kind, weights], capture_output=True, text=True, check=True
            )
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    scratch, teacher, qm = (results[k]["median_s"] for k in ("scratch", "teacher_forward", "qm"))
    print(
        f"device {args.device}, batch {args.batch}, median of {args.steps} steps after {args.warmup} warm-up"
    )
    print(f"{'step':<28}{'median s':>10}{'peak MB':>10}")
    for kind, label in [("scratch", "scratch student step"), ("teacher_forward", "teacher backbone+FPN fwd"),
                        ("qm", "QM step")]:  # fmt: skip
        print(f"{label:<28}{results[kind]['median_s']:>10.3f}{results[kind]['peak_mb']:>10.0f}")
    print(f"QM step / scratch step                     = {qm / scratch:.2f}")
    print(f"QM step / (scratch + teacher forward)      = {qm / (scratch + teacher):.2f}")
    print(
        f"QM step / (scratch + 1.3 x teacher forward) = {qm / (scratch + 1.3 * teacher):.2f}  (target <= 1)"
    )
    print(
        f"QM peak memory / scratch peak memory       = {results['qm']['peak_mb'] / max(results['scratch']['peak_mb'], 1):.2f}"
    )


if __name__ == "__main__":
    main()
