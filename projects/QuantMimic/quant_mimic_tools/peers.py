"""torchvision's tiny detectors trained on our data, beside our students: what a user would pick instead.

    python -m quant_mimic_tools.peers [--models M ...] [--seeds 0 1] [--config-file STUDENTS_CONFIG]
                                      [--max-iter N] [--batch N] [--lr LR] [--split val|test] [--resume]
                                      [--train NAME] [--val NAME] [--test NAME] [--dataset NAME=FORMAT:...]
                                      [--output-dir output/peers] [--json FILE] [--benchmark FILE] [--figure PNG]

Trains ``ssdlite320_mobilenet_v3_large`` and ``fasterrcnn_mobilenet_v3_large_320_fpn`` (torchvision) from
random initialisation, as our students are (``--weights-backbone``: torchvision's ImageNet MobileNetV3-Large
backbone, if it can be loaded here), on a registered detectron2 data set (``--train``, default the built-in
``quantmimic_shapes_train``; a data set of your own with ``--dataset NAME=coco:JSON:IMAGES --train NAME``).

Schedule: as many images as our students see: SOLVER.IMS_PER_BATCH x SOLVER.MAX_ITER of ``--config-file``
(default the scratch student's, 8 x 500), in batches of ``--batch`` (default its IMS_PER_BATCH);
``--max-iter`` sets the iterations instead. Everything else is the peer's torchvision reference recipe
(``references/detection``): SGD with momentum 0.9, its weight decay, its learning rate per image times our
batch (``--lr`` sets it), its schedule shape stretched over ours (SSDlite: cosine; Faster R-CNN: x0.1 at
16/26 and 22/26 of it), its warm-up (linear from 1/1000 over the first epoch, at most 1000 iterations) and
its augmentations (SSDlite: SSD's IoU crop, then a horizontal flip; Faster R-CNN: the flip). Both models
resize every image inside themselves (to 320 px).

Evaluation: detectron2's COCOEvaluator on ``--val`` (default ``quantmimic_shapes_val``) every
``--eval-period`` iterations (default the students' TEST.EVAL_PERIOD) and at the end; with ``--split
test``, each final model is also evaluated once on ``--test`` (default ``quantmimic_shapes_test``), into
``test_metrics.json``: the split choices are not made on.

Each run writes ``<output-dir>/<model>_seed<N>/`` (``<model>_imagenet_seed<N>`` with ``--weights-backbone``):
``peer.json`` (its settings), ``metrics.json`` (detectron2's lines: losses and lr every 20 iterations,
``bbox/AP``... at each evaluation), ``model_<iteration>.pth`` + ``last_checkpoint`` (every
``--checkpoint-period`` iterations, written atomically), ``model_final.pth`` when it is finished, and
prints a progress line with the time per iteration and the ETA. A folder that holds a run is refused
unless ``--resume``, which continues an unfinished run from its last checkpoint (the same images and
augmentations as an uninterrupted run) and leaves a finished one as it is.

At the end (or alone with ``--report-only``) the finished runs of ``--seeds`` are gathered into
``<output-dir>/peers.json``, the record format of ``projects/QuantMimic/docs/records/peers.json``
(``--json FILE`` writes it there too, with a ``source``); ``--benchmark FILE`` (a ``benchmark --peers
--json`` of the same models) adds their latency, parameters and GFLOPs; ``--figure PNG`` draws AP against
deployed CPU latency for them and our teachers and students (:mod:`quant_mimic_tools.report.frontier`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from .cli import HelpFormatter, add_seeds, run

PROG = "peers"
PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT / "configs" / "shapes" / "student_R18_16_FPN_scratch.yaml"
RECORDS = PROJECT / "docs" / "records"
MOMENTUM = 0.9  # the torchvision references' SGD momentum
LOG_PERIOD = 20  # iterations between two training lines of metrics.json (detectron2's period)
SETTINGS_FILE = "peer.json"
FINAL = "model_final.pth"
TEST_METRICS = "test_metrics.json"
LAST_CHECKPOINT = "last_checkpoint"
RECORD_FILE = "peers.json"
# settings a resumed run must share with the run it continues (the others only say when to evaluate/save)
SCHEDULE_KEYS = ("model", "seed", "train", "classes", "batch", "max_iter", "images", "lr", "weight_decay",
                 "schedule", "steps", "warmup_iters", "augment", "weights_backbone")  # fmt: skip


@dataclass
class PeerRun:
    """One training run: a peer model, a seed, its folder and its settings."""

    name: str
    folder: Path
    settings: dict

    @property
    def finished(self) -> bool:
        return (self.folder / FINAL).is_file()

    def checkpoint(self) -> Path | None:
        """The checkpoint ``last_checkpoint`` names, None if there is none."""
        try:
            name = (self.folder / LAST_CHECKPOINT).read_text().strip()
        except OSError:
            return None
        return self.folder / name if name and (self.folder / name).is_file() else None

    def holds_a_run(self) -> bool:
        return any(
            (self.folder / f).exists() for f in (SETTINGS_FILE, "metrics.json", LAST_CHECKPOINT, FINAL)
        )


# ---- settings


def run_folder(output: Path, model: str, seed: int, weights_backbone: bool) -> Path:
    return output / f"{model}{'_imagenet' if weights_backbone else ''}_seed{seed}"


def check_dataset(flag: str, name: str) -> None:
    from detectron2.data import DatasetCatalog

    from quant_mimic.errors import QuantMimicInputError

    if name not in DatasetCatalog.list():
        raise QuantMimicInputError(
            f"{flag} {name} is not a registered data set: use a built-in name (quantmimic_shapes_train, "
            f"quantmimic_shapes_val, quantmimic_shapes_test) or register yours with --dataset {name}=coco:JSON:IMAGES."
        )


def classes_of(name: str) -> list[str]:
    from detectron2.data import MetadataCatalog

    from quant_mimic.errors import QuantMimicInputError

    classes = list(getattr(MetadataCatalog.get(name), "thing_classes", []) or [])
    if not classes:
        raise QuantMimicInputError(
            f"{name} has no thing_classes in its metadata: register it with --dataset."
        )
    return classes


def load_records(name: str) -> list[dict]:
    """The dataset dicts of ``name`` (a generated built-in data set is written first)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from quant_mimic.data import ensure_dataset_generated

    if getattr(MetadataCatalog.get(name), "generated", False):
        ensure_dataset_generated(name)
    return DatasetCatalog.get(name)


def shown_path(path: Path) -> str:
    """``path`` relative to the project folder where it lies inside it (the same on every clone)."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT))
    except ValueError:
        return str(path)


def plan(args: argparse.Namespace) -> list[PeerRun]:
    """The runs of the command line, with their settings (data sets checked, schedule from the config)."""
    from quant_mimic.config import build_config
    from quant_mimic.errors import QuantMimicInputError
    from quant_mimic.peers import check_peer, warmup_iters

    for flag, name in (("--train", args.train), ("--val", args.val)) + (
        (("--test", args.test),) if args.split == "test" else ()
    ):
        check_dataset(flag, name)
    classes = classes_of(args.train)
    for flag, name in (("--val", args.val),) + ((("--test", args.test),) if args.split == "test" else ()):
        if classes_of(name) != classes:
            raise QuantMimicInputError(
                f"{flag} {name} has other classes than --train {args.train} ({', '.join(classes_of(name))} against "
                f"{', '.join(classes)}): evaluate on a split of the same data set."
            )
    cfg = build_config(str(args.config_file), ["MODEL.DEVICE", "cpu"])
    batch = cfg.SOLVER.IMS_PER_BATCH if args.batch is None else args.batch
    images = cfg.SOLVER.IMS_PER_BATCH * cfg.SOLVER.MAX_ITER
    max_iter = math.ceil(images / max(batch, 1)) if args.max_iter is None else args.max_iter
    if min(batch, max_iter) < 1:
        raise QuantMimicInputError(f"--batch {batch} and --max-iter {max_iter}: both must be at least 1.")
    num_images = len(load_records(args.train))
    if num_images == 0:
        raise QuantMimicInputError(f"--train {args.train} has no images: train on a data set with some.")
    eval_period = cfg.TEST.EVAL_PERIOD if args.eval_period is None else args.eval_period
    checkpoint_period = args.checkpoint_period or cfg.SOLVER.CHECKPOINT_PERIOD  # 0: the config's
    if min(eval_period, checkpoint_period) < 0:
        raise QuantMimicInputError(
            f"--eval-period {eval_period} and --checkpoint-period {checkpoint_period}: neither can be negative."
        )
    runs = []
    for model in args.models:
        recipe = check_peer(model)
        lr = args.lr if args.lr is not None else recipe.lr_per_image * batch
        for seed in args.seeds:
            settings = {
                "model": model, "seed": seed, "train": args.train, "val": args.val, "classes": classes,
                "batch": batch, "max_iter": max_iter, "images": batch * max_iter, "lr": lr,
                "momentum": MOMENTUM, "weight_decay": recipe.weight_decay, "schedule": recipe.schedule,
                "steps": [round(f * max_iter) for f in recipe.steps],
                "warmup_iters": warmup_iters(num_images, batch), "augment": list(recipe.augment),
                "weights_backbone": args.weights_backbone, "eval_period": eval_period,
                "checkpoint_period": checkpoint_period, "students_config": shown_path(args.config_file),
                "students_schedule": [cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER],
                "reference": recipe.reference,
            }  # fmt: skip
            folder = run_folder(args.output_dir, model, seed, args.weights_backbone)
            runs.append(PeerRun(folder.name, folder, settings))
    return runs


def check_folders(runs: list[PeerRun], resume: bool) -> None:
    """Refuse, before any training, a folder that holds a run (unless ``resume``) or another run's settings."""
    from quant_mimic.errors import QuantMimicInputError

    for r in runs:
        if not r.holds_a_run():
            continue
        if not resume:
            what = "a finished run" if r.finished else "an unfinished run"
            raise QuantMimicInputError(
                f"{r.folder} holds {what}: pass --resume to continue it (a finished run is left as it is), or "
                "another --output-dir."
            )
        path = r.folder / SETTINGS_FILE
        if path.is_file():
            old = json.loads(path.read_text())
            changed = [k for k in SCHEDULE_KEYS if old.get(k) != r.settings[k]]
            if changed:
                k = changed[0]
                raise QuantMimicInputError(
                    f"{r.folder} was trained with {k} {old.get(k)!r}, this command gives {r.settings[k]!r}: pass "
                    "the same settings to --resume it, or another --output-dir."
                )


# ---- training


def collate(batch: list) -> tuple[list, list]:
    return [b[0] for b in batch], [b[1] for b in batch]


def train_step(model, optimizer, images: list, targets: list) -> dict[str, float]:
    """One SGD step on one batch; returns each loss and their sum (``total_loss``).

    Raises:
        FloatingPointError: the loss is not finite (no step is taken).
    """
    import torch

    losses = model(images, targets)
    total = sum(losses.values())
    if not torch.isfinite(total):
        raise FloatingPointError(
            f"{total.item()} ({', '.join(f'{k} {v.item():.3g}' for k, v in losses.items())})"
        )
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    return {"total_loss": total.item(), **{k: v.item() for k, v in losses.items()}}


def save(path: Path, content: dict) -> None:
    import torch

    from quant_mimic.atomic import atomic_write, write_text

    with atomic_write(path, "wb", advice="free some space and --resume") as f:
        torch.save(content, f)
    if path.name != FINAL:
        write_text(path.parent / LAST_CHECKPOINT, path.name)


def append_metrics(folder: Path, row: dict) -> None:
    """One whole line of metrics.json (one write, flushed)."""
    with open(folder / "metrics.json", "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()


def keep_metrics_until(folder: Path, iteration: int) -> None:
    """Drop the lines of metrics.json written after ``iteration`` (a resumed run writes them again)."""
    from quant_mimic.atomic import write_text

    path = folder / "metrics.json"
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("iteration", 0) <= iteration]
        if kept != lines:
            write_text(path, "".join(line + "\n" for line in kept))


def evaluate(model, dataset: str, folder: Path, device) -> dict[str, float]:
    """detectron2's COCOEvaluator on ``dataset``: ``bbox/AP``, ``bbox/AP50``, ... (per class too)."""
    import torch
    from detectron2.evaluation import COCOEvaluator
    from detectron2.evaluation.testing import flatten_results_dict

    from quant_mimic.peers import read_image, to_instances

    records = load_records(dataset)
    evaluator = COCOEvaluator(
        dataset, tasks=("bbox",), distributed=False, output_dir=str(folder / "inference" / dataset)
    )
    evaluator.reset()
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for record in records:
            image = read_image(record)
            output = model([image.to(device)])[0]
            size = (record.get("height", image.shape[1]), record.get("width", image.shape[2]))
            evaluator.process([{"image_id": record["image_id"]}], [{"instances": to_instances(output, size)}])
    model.train(was_training)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' own summary: the caller prints one line
        results = evaluator.evaluate() or {}
    return flatten_results_dict(results)


def ap_line(metrics: dict) -> str:
    return ", ".join(
        f"{k} {metrics.get(f'bbox/{k}', math.nan):.1f}" for k in ("AP", "AP50", "APs", "APm", "APl")
    )


def duration(seconds: float) -> str:
    return str(timedelta(seconds=round(max(seconds, 0))))


def train(r: PeerRun, args: argparse.Namespace) -> None:
    """Train ``r`` from its last checkpoint (or from the start) to its end, evaluating on the way."""
    import torch

    from quant_mimic.atomic import write_text
    from quant_mimic.errors import QuantMimicInputError
    from quant_mimic.peers import PEERS, PeerData, batch_keys, build_peer, learning_rate

    s = r.settings
    device = torch.device(args.device)
    records = load_records(s["train"])
    torch.manual_seed(s["seed"])
    model = build_peer(s["model"], len(s["classes"]), s["weights_backbone"]).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])
    checkpoint = r.checkpoint()
    state = torch.load(checkpoint, map_location="cpu", weights_only=False) if checkpoint else None
    start = state["iteration"] if state else 0
    data = PeerData(records, len(s["classes"]), tuple(s["augment"]))
    batches = [batch_keys(len(records), s["batch"], s["seed"], i) for i in range(start, s["max_iter"])]
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=batches, collate_fn=collate, num_workers=args.num_workers
    )
    loader = iter(loader)  # draws from torch's RNG: before a resumed run restores it, as the first run did
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        print(f"{PROG}: {r.name}: resuming from {checkpoint} (iteration {start})", flush=True)
    r.folder.mkdir(parents=True, exist_ok=True)
    keep_metrics_until(r.folder, start)
    write_text(r.folder / SETTINGS_FILE, json.dumps(s, indent=2) + "\n")
    recipe = PEERS[s["model"]]
    model.train()
    window: list[dict] = []
    began = tick = time.perf_counter()
    done = start
    try:
        for done, (images, targets) in enumerate(loader, start + 1):
            data_time = time.perf_counter() - tick
            lr = learning_rate(recipe, s["lr"], done - 1, s["max_iter"], s["warmup_iters"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            try:
                losses = train_step(model, optimizer, images, targets)
            except FloatingPointError as e:
                raise QuantMimicInputError(
                    f"{r.name}: the loss became {e} at iteration {done}: lower --lr (it was {s['lr']:g})."
                ) from None
            now = time.perf_counter()
            window.append({**losses, "time": now - tick, "data_time": data_time})
            tick = now
            if done % LOG_PERIOD == 0 or done == s["max_iter"] or done == start + 1:
                row = {k: statistics.median(w[k] for w in window) for k in window[0]}
                append_metrics(r.folder, {"iteration": done, "lr": lr, **row})
                per_iter = (now - began) / (done - start)
                print(
                    f"{PROG}: {r.name}: iteration {done}/{s['max_iter']}, loss {row['total_loss']:.3f}, lr {lr:.3g}, "
                    f"{per_iter:.2f} s/iteration, ETA {duration(per_iter * (s['max_iter'] - done))}",
                    flush=True,
                )
                window = []
            if done == s["max_iter"]:
                break
            if s["eval_period"] and done % s["eval_period"] == 0:
                metrics = evaluate(model, s["val"], r.folder, device)
                append_metrics(r.folder, {"iteration": done, **metrics})
                print(f"{PROG}: {r.name}: iteration {done}, {s['val']}: {ap_line(metrics)}", flush=True)
                tick = time.perf_counter()
            if done % s["checkpoint_period"] == 0:
                write_checkpoint(r, model, optimizer, done)
    except KeyboardInterrupt:  # cli.run prints this one line and exits 130
        checkpoint = r.checkpoint()
        then = (
            f"--resume continues from {checkpoint}"
            if checkpoint
            else "no checkpoint yet: --resume starts again"
        )
        raise KeyboardInterrupt(f"{r.name}: interrupted at iteration {done}; {then}.") from None
    if done >= s["max_iter"]:
        metrics = evaluate(model, s["val"], r.folder, device)
        append_metrics(r.folder, {"iteration": s["max_iter"], **metrics})
        print(f"{PROG}: {r.name}: final, {s['val']}: {ap_line(metrics)}", flush=True)
        save(r.folder / FINAL, {"model": model.state_dict(), "iteration": s["max_iter"], "peer": s})
        write_text(r.folder / LAST_CHECKPOINT, FINAL)
        for old in r.folder.glob("model_[0-9]*.pth"):
            old.unlink()


def write_checkpoint(r: PeerRun, model, optimizer, iteration: int) -> None:
    """``model_<iteration>.pth`` (model, optimizer, torch's RNG; atomic), named by ``last_checkpoint``; the
    previous one is removed once the new one is in place."""
    import torch

    previous = r.checkpoint()
    path = r.folder / f"model_{iteration:07d}.pth"
    content = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
               "torch_rng": torch.get_rng_state(), "peer": r.settings}  # fmt: skip
    save(path, content)
    if previous is not None and previous != path:
        previous.unlink(missing_ok=True)


def evaluate_test(r: PeerRun, test: str, device: str) -> dict:
    """The final model of ``r`` evaluated once on ``test`` (``test_metrics.json``, kept once written)."""
    import torch

    from quant_mimic.atomic import write_text
    from quant_mimic.peers import build_peer

    path = r.folder / TEST_METRICS
    if path.is_file():
        return json.loads(path.read_text())
    state = torch.load(r.folder / FINAL, map_location=device, weights_only=False)
    s = state["peer"]
    model = build_peer(s["model"], len(s["classes"]), s["weights_backbone"])
    model.load_state_dict(state["model"])
    metrics = {
        "iteration": state["iteration"],
        "dataset": test,
        **evaluate(model.to(device), test, r.folder, device),
    }
    write_text(path, json.dumps(metrics, indent=2) + "\n")
    print(f"{PROG}: {r.name}: final, {test}: {ap_line(metrics)}", flush=True)
    return metrics


# ---- the record


def final_metrics(r: PeerRun, split: str) -> dict | None:
    """The final evaluation of a finished run on ``split`` (val: the last of metrics.json)."""
    if not r.finished:
        return None
    if split == "test":
        path = r.folder / TEST_METRICS
        return json.loads(path.read_text()) if path.is_file() else None
    from .results import is_evaluation, read_metrics

    evaluations = [m for m in read_metrics(r.folder) if is_evaluation(m)]
    return evaluations[-1] if evaluations else None


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def latency_rows(benchmark: dict) -> dict:
    """From a ``benchmark --peers --json``: per size, each model's eager and deployed ms (the fastest deployed
    way at batch 1), parameters, GFLOPs and the size it computes on."""
    from .benchmark import best_deployed

    sizes = {}
    shapes = benchmark.get("infer", {}).get("shapes", {})
    for size, row in shapes.items():
        if size in ("configs", "weights"):
            continue
        models = {}
        for name in ("teacher", "student"):
            m = row.get(name, {})
            if "eager" not in m:
                continue
            best = best_deployed(m)
            models[name] = {"eager_ms": m["eager"]["latency_ms"]["total"], "deployed_ms": m[best]["latency_ms"]["total"],
                            "deployed_run": best, "params_M": m["eager"]["params"] / 1e6,
                            "gflops": m["eager"]["gflops"], "computes_at": m["eager"]["input_size"],
                            "weights": shapes.get("weights", {}).get(name)}  # fmt: skip
        for name, m in row.get("peers", {}).items():
            eager = m["eager"]
            deployed = m.get("onnxruntime", eager)
            models[name] = {"eager_ms": eager["latency_ms"]["total"], "deployed_ms": deployed["latency_ms"]["total"],
                            "deployed_run": "onnxruntime" if "onnxruntime" in m else "eager",
                            "params_M": eager["params"] / 1e6, "gflops": eager["gflops"],
                            "computes_at": eager["computes_at"], "weights": eager.get("weights")}  # fmt: skip
        threads = {m.get("threads") for m in row.get("student", {}).values() if isinstance(m, dict)}
        sizes[size] = {"threads": min(threads - {None}, default=None), "models": models}
    return sizes


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()}-core {cpu}, {gpu}; Python {platform.python_version()}, torch {torch.__version__}"
    )


def gather(runs: list[PeerRun], split: str, benchmark: dict | None, command: str) -> dict:
    """The record of the finished runs among ``runs`` (peers.json's format)."""
    from .results import finite_metric

    record: dict[str, Any] = {"split": split, "models": {}}
    for r in runs:
        s = r.settings
        entry = record["models"].setdefault(s["model"], {"runs": {}})
        entry.setdefault(
            "schedule",
            {k: s[k] for k in ("images", "batch", "max_iter", "lr", "momentum", "weight_decay", "schedule", "steps",
                               "warmup_iters", "augment", "weights_backbone", "train", "students_config",
                               "students_schedule", "reference")},
        )  # fmt: skip
        metrics = final_metrics(r, split)
        if metrics is None:
            continue
        entry["runs"][str(s["seed"])] = {
            **{
                k: finite_metric(metrics.get(f"bbox/{k}"))
                for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")
            },
            "dataset": metrics.get("dataset", s["val"]),
            "iteration": metrics.get("iteration"),
        }
    for entry in record["models"].values():
        mean, std = mean_std([v["AP"] for v in entry["runs"].values() if v["AP"] is not None])
        entry["mean"], entry["std"] = finite_metric(mean), finite_metric(std)
    if benchmark is not None:
        record["latency"] = latency_rows(benchmark)
    record["source"] = {
        "command": command,
        "machine": machine(),
        "date": date.today().isoformat(),
        "note": "",
    }
    return record


def summary_table(record: dict) -> str:
    lines = [f"{'model':<40}{'seeds':>6}{'AP per seed':>24}{'mean':>7}{'std':>6}"]
    for name, entry in record["models"].items():
        per_seed = ", ".join(
            f"{s}: {v['AP']:.1f}" for s, v in entry["runs"].items() if v.get("AP") is not None
        )
        mean = "-" if entry["mean"] is None else f"{entry['mean']:.1f}"
        std = "-" if entry["std"] is None else f"{entry['std']:.1f}"
        lines.append(f"{name:<40}{len(entry['runs']):>6}{per_seed or '-':>24}{mean:>7}{std:>6}")
    return "\n".join(lines)


# ---- command line


def get_parser() -> argparse.ArgumentParser:
    from quant_mimic.data.user import add_dataset_argument
    from quant_mimic.peers import PEERS

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(PEERS), choices=list(PEERS), metavar="MODEL",
                        help=f"the torchvision detectors to train ({', '.join(PEERS)})")  # fmt: skip
    add_seeds(parser, "seeds: each model is trained once per seed", default=[0, 1])
    parser.add_argument("--config-file", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
                        help="the students' config whose SOLVER.IMS_PER_BATCH x SOLVER.MAX_ITER images the peers see, "
                        "and whose TEST.EVAL_PERIOD and SOLVER.CHECKPOINT_PERIOD they use")  # fmt: skip
    parser.add_argument(
        "--max-iter", type=int, metavar="N", help="iterations (default: the config's images / --batch)"
    )
    parser.add_argument(
        "--batch", type=int, metavar="N", help="images per iteration (default: the config's IMS_PER_BATCH)"
    )
    parser.add_argument(
        "--lr",
        type=float,
        metavar="LR",
        help="base learning rate (default: the reference's lr per image x --batch)",
    )
    parser.add_argument("--weights-backbone", action="store_true",
                        help="start from torchvision's ImageNet MobileNetV3-Large backbone (if it can be loaded here)")  # fmt: skip
    add_dataset_argument(parser)
    parser.add_argument(
        "--train", default="quantmimic_shapes_train", metavar="NAME", help="the data set trained on"
    )
    parser.add_argument("--val", default="quantmimic_shapes_val", metavar="NAME",
                        help="the data set evaluated on the way and at the end")  # fmt: skip
    parser.add_argument("--test", default="quantmimic_shapes_test", metavar="NAME",
                        help="with --split test: the data set each final model is evaluated on once")  # fmt: skip
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="where the record's APs come from: test also evaluates each final model on --test")  # fmt: skip
    parser.add_argument("--eval-period", type=int, metavar="N",
                        help="evaluate on --val every N iterations, 0: only at the end (default: the config's "
                        "TEST.EVAL_PERIOD)")  # fmt: skip
    parser.add_argument("--checkpoint-period", type=int, metavar="N",
                        help="write a checkpoint every N iterations (default: the config's SOLVER.CHECKPOINT_PERIOD)")  # fmt: skip
    parser.add_argument("--resume", action="store_true",
                        help="continue unfinished runs from their last checkpoint; leave finished ones as they are")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="where the models train and run: cpu, cuda or cuda:N")
    parser.add_argument(
        "--threads", type=int, metavar="N", default=0, help="torch.set_num_threads (0: torch's default)"
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        metavar="N",
        default=0,
        help="data loading processes (0: in the training process)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("output/peers"), metavar="DIR",
                        help="where the runs' folders and peers.json go")  # fmt: skip
    parser.add_argument("--report-only", action="store_true", help="train nothing: gather the finished runs")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the record to FILE (e.g. docs/records/peers.json)")  # fmt: skip
    parser.add_argument("--benchmark", type=Path, metavar="FILE",
                        help="a `benchmark --peers --json` file: the latency, parameters and GFLOPs of the record")  # fmt: skip
    parser.add_argument("--figure", type=Path, metavar="PNG",
                        help="draw AP against deployed CPU latency of the peers and our models (from --records)")  # fmt: skip
    parser.add_argument("--records", type=Path, default=RECORDS, metavar="DIR",
                        help="the records of our models for --figure (main_job*.json, study_fpn.json)")  # fmt: skip
    return parser


def command(args: argparse.Namespace) -> None:
    import torch

    from quant_mimic.data import register_user_datasets
    from quant_mimic.engine.run_lock import run_lock
    from quant_mimic.errors import QuantMimicInputError

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    register_user_datasets(args.dataset)
    benchmark = None
    if args.benchmark is not None:
        try:
            benchmark = json.loads(args.benchmark.read_text())
        except (OSError, ValueError) as e:
            raise QuantMimicInputError(
                f"--benchmark {args.benchmark} cannot be read ({e}): pass a benchmark --json file."
            ) from None
    runs = plan(args)
    if not args.report_only:
        check_folders(runs, args.resume)
        for r in runs:
            with run_lock(r.folder, "--output-dir"):
                if not r.finished:
                    train(r, args)
                else:
                    print(f"{PROG}: {r.name}: finished already, left as it is", flush=True)
                if args.split == "test":
                    evaluate_test(r, args.test, args.device)
    elif args.split == "test":
        for r in runs:
            if r.finished:
                evaluate_test(r, args.test, args.device)
    command_line = "python -m quant_mimic_tools.peers " + " ".join(shlex.quote(a) for a in args.argv)
    record = gather(runs, args.split, benchmark, command_line.strip())
    from .cli import write_json

    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json(str(args.output_dir / RECORD_FILE), record)
    if args.json is not None:
        write_json(str(args.json), record)
    print(summary_table(record))
    if args.figure is not None:
        from .report.frontier import accuracy_latency

        accuracy_latency(args.records, args.figure, peers=record)
        print(f"written: {args.figure}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments, and the command line itself (``args.argv``, for the record)."""
    args = get_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> None:
    run(PROG, parse_args, command, argv)


if __name__ == "__main__":
    main()
