"""The main job: teacher -> quantized teacher -> students (scratch, mimic, Quantization Mimic), evaluated.

    python -m quant_mimic_tools.pipeline [--output output/shapes] [--seeds 0 1 2] [--smoke] [--report-only]
    python -m quant_mimic_tools.pipeline --dataset mytrain=coco:train.json:images/ \
        --dataset myval=coco:val.json:images/ --train mytrain --val myval [--output output/mytrain] [KEY VALUE ...]

With ``--dataset`` / ``--train`` / ``--val`` (see datasets/README.md) the chain runs on a data set of your
own: every stage trains on ``--train`` and is evaluated on ``--val``, with the number of classes and the
class names of the data (the students' teacher config is the teacher run's own ``config.yaml``); the data
sets are checked before the first stage, and recorded in ``<output>/user_data.json`` so that a rerun (or
``--report-only``) of the same ``--output`` needs no ``--dataset`` again. Trailing ``KEY VALUE`` pairs are
config overrides for every stage (e.g. the input size of larger images). ``--dry-run`` prints each stage's
``train_net.py`` command and stops.

Every stage is an ordinary ``train_net.py`` run with its own OUTPUT_DIR. A finished stage (its
metrics.json holds the final evaluation) is reused; an interrupted one continues with ``--resume``.
At the end the results table is written as ``<output>/results.md`` and ``<output>/results.json``, and
the report (model-zoo table with cost, pictures, index page; see ``quant_mimic_tools.report``) into
``<output>/report/``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .results import finite_metric, read_final_metrics, table_cell

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAIN_NET = Path(__file__).resolve().parents[1] / "train_net.py"
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_ERROR_LINE = re.compile(r"(Error\b|error:|Traceback)")  # not the "-Werror" of torch's build settings

# A smoke run: the 64-image data set and a handful of iterations per stage (tests, quick checks).
SMOKE_OPTS = [
    "DATASETS.TRAIN", "('quantmimic_shapes_mini_train',)",
    "DATASETS.TEST", "('quantmimic_shapes_mini_val',)",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.MAX_ITER", "6",
    "SOLVER.STEPS", "()",
    "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.CHECKPOINT_PERIOD", "1000",
    "DATALOADER.NUM_WORKERS", "0",
    "MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES", "0",
]  # fmt: skip


@dataclass
class UserData:
    """The main job on a data set of your own: the ``--dataset`` values (absolute paths) and the names of
    the training and the validation set among them."""

    specs: list[str]
    train: str
    val: str
    val_format: str  # "coco" or "voc"

    def args(self) -> list[str]:
        """The ``--dataset`` options of every stage's train_net.py."""
        return [a for spec in self.specs for a in ("--dataset", spec)]

    def opts(self) -> list[str]:
        return ["DATASETS.TRAIN", f"('{self.train}',)", "DATASETS.TEST", f"('{self.val}',)"]

    def record(self) -> dict:
        return {"datasets": self.specs, "train": self.train, "val": self.val, "val_format": self.val_format}


@dataclass
class Stage:
    name: str  # also the folder under --output
    config: str  # relative to the project's configs/
    description: str
    opts: list[str] = field(default_factory=list)


def chain(output: Path, seeds: list[int], data: UserData | None = None) -> list[Stage]:
    """The stages in order; students get one stage per seed, teachers are shared. On ``data``, the
    students read their teacher's config from the teacher run (``config.yaml``: the data's classes)."""
    teacher, teacher_q = output / "teacher_R18_2_FPN", output / "teacher_R18_2_FPN_quant"
    teacher_opts: list[list[str]] = [[], []]  # mimic, qm
    if data is not None:
        teacher_opts = [
            ["MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(teacher / "config.yaml")],
            ["MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(teacher_q / "config.yaml")],
        ]
    stages = [
        Stage(
            "teacher_R18_2_FPN", "shapes/teacher_R18_2_FPN.yaml", "full-precision teacher, ResNet18-1-2 FPN"
        ),
        Stage(
            "teacher_R18_2_FPN_quant",
            "shapes/teacher_R18_2_FPN_quant.yaml",
            "quantized teacher (fine-tuned with Q)",
            ["MODEL.WEIGHTS", str(teacher / "model_final.pth")],
        ),
    ]
    students = [
        ("scratch", "shapes/student_R18_16_FPN_scratch.yaml", "ResNet18-1-16 student, from scratch", []),
        (
            "mimic",
            "shapes/mimic_R18_16_FPN.yaml",
            "ResNet18-1-16 student, mimic (Li et al.)",
            ["MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(teacher / "model_final.pth"), *teacher_opts[0]],
        ),
        (
            "qm",
            "qm_R_tiny_FPN.yaml",
            "ResNet18-1-16 student, Quantization Mimic",
            ["MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(teacher_q / "model_final.pth"), *teacher_opts[1]],
        ),
    ]
    for seed in seeds:
        for kind, config, description, opts in students:
            stages.append(
                Stage(
                    f"student_{kind}_seed{seed}",
                    config,
                    f"{description}, seed {seed}",
                    [*opts, "SEED", str(seed)],
                )
            )
    return stages


def stage_command(
    stage: Stage, output: Path, extra_opts: list[str], data: UserData | None = None
) -> list[str]:
    """The train_net.py command of ``stage`` (with --resume when its folder holds a checkpoint)."""
    out = output / stage.name
    cmd = [sys.executable, str(TRAIN_NET), "--config-file", str(CONFIGS / stage.config)]
    cmd += data.args() if data else []
    cmd += ["--resume"] if (out / "last_checkpoint").exists() else []
    return cmd + [*stage.opts, *extra_opts, "OUTPUT_DIR", str(out)]


def run_stage(
    stage: Stage, output: Path, extra_opts: list[str], index: int, total: int, data: UserData | None = None
) -> dict:
    """Run ``stage`` (``extra_opts``: overrides after its own; ``data``: the user's data sets)."""
    out = output / stage.name
    done = read_final_metrics(out)
    if done is not None:
        print(f"[{index}/{total}] {stage.name}: done already, reusing {out}", flush=True)
        return done
    resume = (out / "last_checkpoint").exists()
    print(f"[{index}/{total}] {stage.name}: {stage.description}{' (resuming)' if resume else ''}", flush=True)
    cmd = stage_command(stage, output, extra_opts, data)
    start = time.time()
    log = out.parent / f"{stage.name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:  # keep the whole log, show detectron2's progress lines (with ETA)
            f.write(line)
            if "eta:" in line or "copypaste:" in line or _ERROR_LINE.search(line):
                print("    " + line.rstrip()[:160], flush=True)
    if proc.wait() != 0:
        raise SystemExit(f"Stage {stage.name} failed (exit {proc.returncode}); its log is {log}.")
    metrics = read_final_metrics(out)
    if metrics is None:
        raise SystemExit(f"Stage {stage.name} finished without a final evaluation; its log is {log}.")
    print(f"    {stage.name}: AP {metrics['bbox/AP']:.1f} in {time.time() - start:.0f} s", flush=True)
    return metrics


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation of AP / AP50 over the seeds of each student kind."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if "_seed" in row["model"]:
            groups.setdefault(row["model"].rsplit("_seed", 1)[0], []).append(row)
    summary = []
    for kind, members in groups.items():
        entry = {"model": kind, "seeds": len(members)}
        for k in ("AP", "AP50"):
            values = [m[k] for m in members if m[k] is not None]
            entry[f"{k}_mean"] = round(statistics.mean(values), 2) if values else None
            entry[f"{k}_std"] = round(statistics.stdev(values), 2) if len(values) > 1 else None
        summary.append(entry)
    return summary


def write_results(output: Path, stages: list[Stage], results: dict[str, dict]) -> None:
    """``results.json`` (every run, and per-kind means over seeds) and ``results.md`` (the same as tables)."""
    rows = []
    for stage in stages:
        m = results[stage.name]
        rows.append({"model": stage.name, "description": stage.description, "config": stage.config,
                     "checkpoint": str(output / stage.name / "model_final.pth"),
                     **{k: finite_metric(m.get(f"bbox/{k}")) for k in METRICS}})  # fmt: skip
    summary = summarize(rows)
    (output / "results.json").write_text(json.dumps({"runs": rows, "over_seeds": summary}, indent=2) + "\n")
    lines = ["| model | " + " | ".join(METRICS) + " | config |", "|---" * (len(METRICS) + 2) + "|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | " + " | ".join(table_cell(r[k]) for k in METRICS) + f" | {r['config']} |"
        )
    if summary:
        lines += [
            "",
            "| student | seeds | AP mean | AP std | AP50 mean | AP50 std |",
            "|---|---|---|---|---|---|",
        ]
        for e in summary:
            cells = [table_cell(e[k]) for k in ("AP_mean", "AP_std", "AP50_mean", "AP50_std")]
            lines.append(f"| {e['model']} | {e['seeds']} | " + " | ".join(cells) + " |")
    (output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def data_table(data: UserData) -> str:
    """The report's table of the user's data sets (registered in this process)."""
    from detectron2.data import MetadataCatalog

    from quant_mimic.data.user import user_dataset

    lines = ["| role | name | format | path | classes |", "|---|---|---|---|---|"]
    for role, name in (("train", data.train), ("val", data.val)):
        ds = user_dataset(name)
        where = ds.path + (f" (split {ds.split})" if ds.split else f", images {ds.image_root}")
        classes = ", ".join(MetadataCatalog.get(name).thing_classes)
        lines.append(f"| {role} | {name} | {ds.format} | {where} | {classes} |")
    return "\n".join(lines) + "\n"


def write_stage_report(output: Path, stages: list[Stage], repeats: int, data: UserData | None = None) -> Path:
    """The report of the finished chain: every model in the table and pictures; curves and the
    matching ratio for the first seed's students. On ``data``, its data sets are registered here first
    (the pictures are drawn on the val images, with the data's class names)."""
    from .report import Run, write_report  # imports detectron2: not needed to list the chain

    tables = []
    if data is not None:
        from quant_mimic.data.user import register_user_datasets

        register_user_datasets(data.specs)
        tables.append(("Data", data_table(data)))
    runs = [Run(s.name, s.description, s.config, output / s.name) for s in stages]
    first_seed = [r for r in runs if "_seed" in r.name][:3]
    mimic = [r for r in first_seed if r.is_mimic]
    results = (output / "results.md").read_text()
    tables.append(("AP of every run, and over seeds", results))
    return write_report(output / "report", runs, first_seed, mimic, tables, repeats)


DATA_RECORD = "user_data.json"


def fail(message: str) -> None:
    print(f"pipeline: error: {message}", file=sys.stderr)
    sys.exit(2)


def resolve_data(args: argparse.Namespace, output: Path) -> UserData | None:
    """The user's data of this run: from --dataset / --train / --val (checked against the data the
    output folder's runs were made on), else the one ``<output>/user_data.json`` records, else None (the
    built-in data set). Raises QuantMimicInputError."""
    from quant_mimic.data.user import parse_dataset_spec
    from quant_mimic.errors import QuantMimicInputError

    record = output / DATA_RECORD
    saved = json.loads(record.read_text()) if record.is_file() else None
    if not (args.dataset or args.train or args.val):
        if saved is None:
            return None
        return UserData(saved["datasets"], saved["train"], saved["val"], saved["val_format"])
    if not (args.train and args.val):
        raise QuantMimicInputError(
            "--dataset needs --train NAME and --val NAME: the data set the stages train on and the one they are "
            "evaluated on."
        )
    parsed = {d.name: d for d in map(parse_dataset_spec, args.dataset)}
    for flag, name in (("--train", args.train), ("--val", args.val)):
        if name not in parsed:
            raise QuantMimicInputError(
                f"{flag} {name} is not one of the --dataset names ({', '.join(parsed) or 'none given'}): register it "
                f"with --dataset {name}=coco:JSON:IMAGES or {name}=voc:DIR:SPLIT."
            )
    data = UserData([d.canonical() for d in parsed.values()], args.train, args.val, parsed[args.val].format)
    if saved is not None and saved != data.record():
        raise QuantMimicInputError(
            f"{output} holds runs on other data ({record}: train {saved['train']}, val {saved['val']}): pass a new "
            "--output for this data."
        )
    if saved is None and any((output / s.name).exists() for s in chain(output, args.seeds)):
        raise QuantMimicInputError(
            f"{output} holds runs on the built-in data set: pass a new --output for your data."
        )
    return data


def check_data(data: UserData) -> None:
    """Register and check the user's data sets before the first stage (the stages check them again)."""
    from quant_mimic.data.user import check_user_dataset, register_user_datasets

    register_user_datasets(data.specs)
    for name, training in ((data.train, True), (data.val, False)):
        print(
            "    " + check_user_dataset(name, for_training=training, for_evaluation=not training), flush=True
        )


def get_parser() -> argparse.ArgumentParser:
    from quant_mimic.data.user import add_dataset_argument  # the option every command shares

    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, help="one folder per stage (default output/shapes, or output/<--train>)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="student seeds")
    parser.add_argument("--smoke", action="store_true", help="tiny data set, 6 iterations per stage")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report of finished stages")
    add_dataset_argument(parser)
    parser.add_argument(
        "--train", metavar="NAME", help="a --dataset name: the data set every stage trains on"
    )
    parser.add_argument(
        "--val", metavar="NAME", help="a --dataset name: the data set every stage is evaluated on"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print each stage's train_net.py command and stop"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides for every stage: KEY VALUE pairs"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    # torch's deprecation notices about what detectron2 calls at import: noise around the one-line errors
    warnings.filterwarnings("ignore", message=r".*(deprecat|in an upcoming release)", category=FutureWarning)
    from quant_mimic.errors import QuantMimicInputError, one_line

    args = get_parser().parse_args(argv)
    output = (args.output or Path("output") / (args.train or "shapes")).resolve()
    try:
        data = resolve_data(args, output)
        if data is not None and not args.report_only and not args.dry_run:
            check_data(data)
    except QuantMimicInputError as e:
        fail(one_line(e))
    stages = chain(output, args.seeds, data)
    extra = (SMOKE_OPTS if args.smoke else []) + (data.opts() if data else []) + list(args.opts)
    if args.dry_run:
        for stage in stages:
            print(shlex.join(stage_command(stage, output, extra, data)))
        return
    start = time.time()
    if not args.report_only:
        if data is not None:
            output.mkdir(parents=True, exist_ok=True)
            (output / DATA_RECORD).write_text(json.dumps(data.record(), indent=2) + "\n")
        results = {}
        for i, stage in enumerate(stages, 1):
            results[stage.name] = run_stage(stage, output, extra, i, len(stages), data)
            elapsed = time.time() - start
            print(f"    elapsed {elapsed / 60:.1f} min, {i}/{len(stages)} stages", flush=True)
        write_results(output, stages, results)
    missing = [s.name for s in stages if read_final_metrics(output / s.name) is None]
    if missing:
        raise SystemExit(
            f"No report: stages {missing} have not finished; run the main job without --report-only."
        )
    print("Writing the report (model-zoo table with GFLOPs and CPU latency, pictures) ...", flush=True)
    index = write_stage_report(output, stages, repeats=3 if args.smoke else 20, data=data)
    print(
        f"Main job done in {(time.time() - start) / 60:.1f} min; results in {output / 'results.md'}, "
        f"report in {index}"
    )


if __name__ == "__main__":
    main()
