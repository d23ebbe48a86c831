"""The main job: teacher -> quantized teacher -> students (scratch, mimic, Quantization Mimic), evaluated.

    python -m quant_mimic_tools.pipeline [--output-dir output/shapes] [--seeds 0 1 2] [--smoke] [--report-only]
    python -m quant_mimic_tools.pipeline --setting voc [--data-root datasets] [--output-dir output/voc]
    python -m quant_mimic_tools.pipeline --setting wider_face [--data-root datasets] [--output-dir output/wider_face]
    python -m quant_mimic_tools.pipeline --setting voc --smoke     # toy VOC-format data, a few iterations
    python -m quant_mimic_tools.pipeline --setting voc --estimate [--seeds 0 1 2] [--json F] [MODEL.DEVICE cpu]
    python -m quant_mimic_tools.pipeline --dataset mytrain=coco:train.json:images/ \
        --dataset myval=coco:val.json:images/ --train mytrain --val myval [--output-dir output/mytrain] [KEY VALUE ...]

``--setting`` picks the chain (``quant_mimic_tools/chains.py``): ``shapes`` (default, the built-in data
set), ``voc`` (the paper's Table 7: configs/voc/, VOC07+12 trainval -> VOC07 test, AP50 and the AP50 of
every class) or ``wider_face`` (Tables 2-6: configs/wider_face/, grayscale VGG R-FCN with OHEM, official
easy / medium / hard AP). Their data sets are read from ``--data-root`` (default ``$DETECTRON2_DATASETS``,
else ``datasets``; the layout of datasets/README.md), and their teachers start from the ImageNet weights
the teacher config names (``MODEL.WEIGHTS``, written by ``python -m quant_mimic_tools.convert``, see
the project README) unless ``--init-weights`` says otherwise (``""``: from scratch). The results table
holds the setting's metric and the paper's numbers beside ours.

``--smoke``: every stage with a handful of iterations, a small batch and small images; for ``voc`` and
``wider_face`` on a toy data set in the official layout generated into ``<output>/toy_data`` (unless
``--data-root`` is given), with the teacher from scratch. Its default ``--output-dir`` is
``output/<setting>_smoke``, so a smoke run never stands in for a real one.

With ``--dataset`` / ``--train`` / ``--val`` (see datasets/README.md) the chain runs on a data set of your
own: every stage trains on ``--train`` and is evaluated on ``--val``, with the number of classes and the
class names of the data (the students' teacher config is the teacher run's own ``config.yaml``); the data
sets are checked before the first stage, and recorded in ``<output>/user_data.json`` so that a rerun (or
``--report-only``) of the same ``--output-dir`` needs no ``--dataset`` again. Trailing ``KEY VALUE`` pairs are
config overrides for every stage (e.g. the input size of larger images). ``--dry-run`` prints each stage's
``train_net.py`` command and stops.

``--estimate`` trains nothing: it times each stage's training step and test image on this machine, with
the stage's config and overrides (``MODEL.DEVICE``: CUDA where there is one, as the stages), at the data
set's typical image size, and prints the chain's estimated hours for ``--seeds`` (see
``quant_mimic_tools/estimate.py``; ``--json`` also writes them to a file).

Every stage is an ordinary ``train_net.py`` run with its own OUTPUT_DIR. A finished stage (its
metrics.json holds the final evaluation) is reused; an interrupted one continues with ``--resume``. The
setting, its data root and whether it is a smoke run are recorded in ``<output>/main_job.json``: a rerun
needs none of them again, and other ones on that folder are refused.
At the end the results table is written as ``<output>/results.md`` and ``<output>/results.json``, and
the report (model-zoo table with cost, pictures, index page; see ``quant_mimic_tools.report``) into
``<output>/report/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from .chains import CHAINS, SHAPES, Chain, register_data, write_toy_data
from .cli import add_overrides, add_seeds, make_parser, run, write_json
from .results import finite_metric, read_final_metrics, table_cell
from .runner import CONFIGS, MainJob, Stage, run_stage, stage_command


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


def chain_stages(
    output: Path,
    seeds: list[int],
    data: UserData | None = None,
    chain: Chain = SHAPES,
    teacher_weights: str | None = None,
) -> list[Stage]:
    """The stages of ``chain`` in order; students get one stage per seed, teachers are shared. On
    ``data`` or a chain other than the built-in one, the students read their teacher's config from
    the teacher run (``config.yaml``: the data's classes, the run's overrides). ``teacher_weights``:
    the first teacher's MODEL.WEIGHTS (None: its config's)."""
    spec_t, spec_q = chain.teacher, chain.teacher_quant
    teacher, teacher_q = output / spec_t.name, output / spec_q.name
    teacher_opts: list[list[str]] = [[], []]  # mimic, qm
    if data is not None or chain is not SHAPES:
        teacher_opts = [
            ["MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(teacher / "config.yaml")],
            ["MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(teacher_q / "config.yaml")],
        ]
    init = [] if teacher_weights is None else ["MODEL.WEIGHTS", teacher_weights]
    stages = [
        Stage(spec_t.name, spec_t.config, spec_t.description, init, dict(spec_t.paper)),
        Stage(spec_q.name, spec_q.config, spec_q.description, ["MODEL.WEIGHTS", str(teacher / "model_final.pth")],
              dict(spec_q.paper)),
    ]  # fmt: skip
    scratch, mimic, qm = chain.students
    students = [
        (scratch, []),
        (mimic, ["MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(teacher / "model_final.pth"), *teacher_opts[0]]),
        (qm, ["MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(teacher_q / "model_final.pth"), *teacher_opts[1]]),
    ]
    for seed in seeds:
        for spec, opts in students:
            stages.append(
                Stage(
                    f"{spec.name}_seed{seed}",
                    spec.config,
                    f"{spec.description}, seed {seed}",
                    [*opts, "SEED", str(seed)],
                    dict(spec.paper),
                )
            )
    return stages


def summarize(rows: list[dict], keys: tuple[str, ...] = ("AP", "AP50")) -> list[dict]:
    """Mean and sample standard deviation of ``keys`` (e.g. AP / AP50) over the seeds of each student kind."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if "_seed" in row["model"]:
            groups.setdefault(row["model"].rsplit("_seed", 1)[0], []).append(row)
    summary = []
    for kind, members in groups.items():
        entry = {"model": kind, "seeds": len(members)}
        for k in keys:
            values = [m[k] for m in members if m[k] is not None]
            entry[f"{k}_mean"] = round(statistics.mean(values), 2) if values else None
            entry[f"{k}_std"] = round(statistics.stdev(values), 2) if len(values) > 1 else None
        summary.append(entry)
    return summary


PER_CLASS_PREFIX = "bbox/AP50-"  # the per-class AP50 of the VOC evaluation


def per_class_table(stages: list[Stage], results: dict[str, dict]) -> str:
    """A Markdown table of the AP50 of every class (rows) per run (columns), for the classes the val
    set has ("" when no run reports per-class AP50)."""
    classes: list[str] = []
    for stage in stages:
        for key, value in results[stage.name].items():
            name = key[len(PER_CLASS_PREFIX) :]
            if key.startswith(PER_CLASS_PREFIX) and finite_metric(value) is not None and name not in classes:
                classes.append(name)
    if not classes:
        return ""
    lines = ["| class | " + " | ".join(s.name for s in stages) + " |", "|---" * (len(stages) + 1) + "|"]
    for name in classes:
        cells = [table_cell(finite_metric(results[s.name].get(PER_CLASS_PREFIX + name))) for s in stages]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(output: Path, stages: list[Stage], results: dict[str, dict], chain: Chain = SHAPES) -> None:
    """``results.json`` (every run with the chain's metrics and the paper's numbers, per-kind means over
    seeds) and ``results.md`` (the same as tables; for VOC also the AP50 of every class)."""
    labels = [m.label for m in chain.metrics]
    paper = list(chain.paper_metrics)
    rows = []
    for stage in stages:
        m = results[stage.name]
        rows.append({"model": stage.name, "description": stage.description, "config": stage.config,
                     "checkpoint": str(output / stage.name / "model_final.pth"),
                     **{x.label: finite_metric(m.get(x.key)) for x in chain.metrics},
                     "paper": {k: stage.paper[k] for k in paper if k in stage.paper}})  # fmt: skip
    summary = summarize(rows, chain.summary_metrics)
    record = {
        "setting": chain.name,
        "paper_source": chain.paper_source,
        "runs": rows,
        "over_seeds": summary,
    }
    from quant_mimic.atomic import write_text

    write_text(output / "results.json", json.dumps(record, indent=2) + "\n", RERUN_ADVICE)
    header = labels + [f"paper {k}" for k in paper]
    lines = [f"Setting: {chain.title}." + (f" Paper: {chain.paper_source}." if paper else ""), ""]
    lines += ["| model | " + " | ".join(header) + " | config |", "|---" * (len(header) + 2) + "|"]
    for r in rows:
        cells = [table_cell(r[k]) for k in labels] + [table_cell(r["paper"].get(k)) for k in paper]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {r['config']} |")
    if summary:
        keys = chain.summary_metrics
        lines += [
            "",
            "| student | seeds | " + " | ".join(f"{k} mean | {k} std" for k in keys) + " |",
            "|---|---|" + "---|---|" * len(keys),
        ]
        for e in summary:
            cells = [table_cell(e[f"{k}_{s}"]) for k in keys for s in ("mean", "std")]
            lines.append(f"| {e['model']} | {e['seeds']} | " + " | ".join(cells) + " |")
    per_class = per_class_table(stages, results)
    if per_class:
        lines += ["", "AP50 of every class of the val set (VOC07 11-point AP):", "", per_class.rstrip()]
    write_text(output / "results.md", "\n".join(lines) + "\n", RERUN_ADVICE)
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


def write_stage_report(
    output: Path, stages: list[Stage], repeats: int, data: UserData | None = None, job: MainJob | None = None
) -> Path:
    """The report of the finished chain: every model in the table and pictures; curves and the
    matching ratio for the first seed's students. On ``data``, its data sets are registered here first
    (the pictures are drawn on the val images, with the data's class names); for a chain, its data
    sets under the job's data root."""
    from .report import Run, write_report  # imports detectron2: not needed to list the chain

    job = job or MainJob()
    tables = []
    if data is not None:
        from quant_mimic.data.user import register_user_datasets

        register_user_datasets(data.specs)
        tables.append(("Data", data_table(data)))
    if job.data_root is not None:
        register_data(job.chain, job.data_root)
    runs = [Run(s.name, s.description, s.config, output / s.name) for s in stages]
    first_seed = [r for r in runs if "_seed" in r.name][:3]
    mimic = [r for r in first_seed if r.is_mimic]
    results = (output / "results.md").read_text()
    tables.append((f"{', '.join(m.label for m in job.chain.metrics)} of every run, and over seeds", results))
    metrics = [(m.label, m.key) for m in job.chain.metrics]
    title = f"QuantMimic main job ({job.chain.title}{', smoke run' if job.smoke else ''}): report"
    return write_report(
        output / "report", runs, first_seed, mimic, tables, repeats, metrics=metrics, title=title
    )


DATA_RECORD = "user_data.json"
JOB_RECORD = "main_job.json"
# what to do after a write failed for want of space or permission
RERUN_ADVICE = (
    "free some space (or make it writable), then run the same command again: finished stages are reused"
)


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
            "--output-dir for this data."
        )
    if saved is None and any((output / s.name).exists() for s in chain_stages(output, args.seeds)):
        raise QuantMimicInputError(
            f"{output} holds runs on the built-in data set: pass a new --output-dir for your data."
        )
    return data


def default_output(args: argparse.Namespace) -> Path:
    """output/<setting> (output/<--train> for the user's data), with ``_smoke`` for a smoke run."""
    name = args.train or args.setting or "shapes"
    return Path("output") / (f"{name}_smoke" if args.smoke else name)


def resolve_job(args: argparse.Namespace, output: Path) -> MainJob:
    """The chain, data root, smoke flag and teacher weights of this run: from the options, else what
    ``<output>/main_job.json`` records; options that differ from the record are refused (other runs live
    in another --output-dir). Raises QuantMimicInputError."""
    from quant_mimic.errors import QuantMimicInputError

    record = output / JOB_RECORD
    saved = json.loads(record.read_text()) if record.is_file() else None
    name = args.setting or (saved["setting"] if saved else SHAPES.name)
    chain = CHAINS[name]
    if (
        saved is None
        and chain is not SHAPES
        and any((output / s.name).exists() for s in chain_stages(output, [0]))
    ):
        raise QuantMimicInputError(f"{output} holds runs on the built-in data set: pass a new --output-dir.")
    if chain is not SHAPES and (args.dataset or args.train or args.val):
        raise QuantMimicInputError(
            f"--setting {name} reads its own data sets from --data-root; --dataset / --train / --val run the "
            "built-in chain on data of your own: use one or the other."
        )
    smoke = args.smoke or bool(saved and saved["smoke"])
    if chain is SHAPES:
        data_root = None if args.data_root is None else Path(args.data_root).resolve()
    elif args.data_root is not None:
        data_root = Path(args.data_root).resolve()
    elif saved is not None and saved["data_root"]:
        data_root = Path(saved["data_root"])
    elif smoke:
        data_root = output / "toy_data"
    else:
        data_root = Path(os.environ.get("DETECTRON2_DATASETS", "datasets")).resolve()
    weights = args.init_weights
    if weights is None and saved is not None:
        weights = saved.get("teacher_weights")
    if weights is None and smoke and chain is not SHAPES:
        weights = ""  # the toy teacher starts from scratch
    job = MainJob(chain, data_root, smoke, weights)
    if saved is not None:
        differs = [k for k, v in job.record().items() if saved.get(k) != v]
        if differs:
            was = ", ".join(f"{k} {saved.get(k)!r}" for k in differs)
            raise QuantMimicInputError(
                f"{output} holds a main job with {was} ({record}): pass a new --output-dir for this one."
            )
    return job


def check_job(job: MainJob, output: Path) -> None:
    """Before the first stage of a chain: its data sets are under the data root (a smoke run's toy data
    set is generated there), and the teacher's initial weights exist. Raises QuantMimicInputError."""
    from quant_mimic.config import build_config
    from quant_mimic.errors import QuantMimicInputError

    chain = job.chain
    if chain is SHAPES:
        return
    if job.smoke and job.data_root == output / "toy_data":
        print(f"    toy {chain.name} data set (official layout) in {job.data_root}", flush=True)
        write_toy_data(chain, job.data_root)
    for folder in chain.data_folders:
        if not (job.data_root / folder).is_dir():
            raise QuantMimicInputError(
                f"--data-root {job.data_root} holds no {folder}/: put the {chain.title} data there as "
                "datasets/README.md shows, pass --data-root, or try the chain with --smoke (toy data)."
            )
    weights = job.teacher_weights
    config = CONFIGS / chain.teacher.config
    if weights is None:
        weights = build_config(str(config)).MODEL.WEIGHTS
    if weights and "://" not in weights and not os.path.isfile(weights):
        model, options = chain.imagenet or ("", ())
        convert = shlex.join(["python", "-m", "quant_mimic_tools.convert", "--model", model, "--input",
                              f"{model}.pth", "--output", weights, *options, "--config-file", str(config)])  # fmt: skip
        raise QuantMimicInputError(
            f"The teacher's initial weights {weights} (MODEL.WEIGHTS of {chain.teacher.config}) do not exist: "
            f"convert torchvision's ImageNet {model} first ({convert}), or pass --init-weights '' to train "
            "the teacher from scratch."
        )


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

    parser = make_parser("pipeline", __doc__)
    parser.add_argument(
        "--output-dir",
        dest="output",
        type=Path,
        metavar="DIR",
        help="one folder per stage (default: output/<setting>, output/<--train>, or output/<setting>_smoke "
        "with --smoke)",
    )
    parser.add_argument(
        "--setting",
        choices=sorted(CHAINS),
        help="the chain: shapes (built-in data set, default), voc (paper Table 7), voc_single (the same with the "
        "single-level detector), wider_face (Tables 2-6)",
    )
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="the folder holding VOC2007/ + VOC2012/ or WIDER_FACE/ (default: $DETECTRON2_DATASETS or datasets)",
    )
    parser.add_argument(
        "--init-weights",
        metavar="FILE",
        help="the first teacher's initialisation, its MODEL.WEIGHTS (default: its config's, the converted "
        "ImageNet weights; '': from scratch)",
    )
    add_seeds(parser, "student seeds, one student per kind each")
    parser.add_argument(
        "--smoke", action="store_true", help="a few iterations per stage on a tiny (or toy) data set"
    )
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
        "--estimate",
        action="store_true",
        help="time each stage's training step and test image here, print the chain's estimated hours and stop",
    )
    parser.add_argument(
        "--estimate-steps", type=int, default=20, metavar="N", help="with --estimate: timed steps per stage"
    )
    parser.add_argument(
        "--estimate-warmup", type=int, default=5, metavar="N", help="with --estimate: untimed steps first"
    )
    parser.add_argument("--json", metavar="FILE", help="with --estimate: also write the estimate to FILE")
    add_overrides(parser, "every stage's config")
    return parser


def main(argv: list[str] | None = None) -> None:
    """The main job, holding ``<output>/.lock`` throughout (one main job per folder). A bad input, a
    second job on the folder, or a write that fails for want of space or permission ends as one line
    ``pipeline: error: ...`` (exit 2); Ctrl-C as one line naming the stage and how to continue (exit 130)."""
    interrupted = "run the same command again to continue"
    run("pipeline", get_parser(), locked_job, argv, interrupted=interrupted, write_advice=RERUN_ADVICE)


def locked_job(args: argparse.Namespace) -> None:
    """:func:`run_job` in ``args``' output folder, holding its lock (not to print or estimate a chain)."""
    from quant_mimic.engine.run_lock import run_lock

    output = (args.output or default_output(args)).resolve()
    with contextlib.nullcontext() if args.dry_run or args.estimate else run_lock(output, "--output-dir"):
        run_job(args, output)


def estimate_job(args: argparse.Namespace, chain: Chain, data: UserData | None, opts: list[str]) -> None:
    """``--estimate``: the chain's time per stage and its hours here (:mod:`.estimate`), nothing trained."""
    from quant_mimic.errors import QuantMimicInputError

    from .estimate import estimate

    if data is not None:
        raise QuantMimicInputError(
            "--estimate times a chain at its data set's typical image size, which it does not know for --dataset "
            "data: estimate the --setting whose images are most like yours."
        )
    if args.estimate_steps < 1 or args.estimate_warmup < 0:
        raise QuantMimicInputError("--estimate-steps must be at least 1 and --estimate-warmup at least 0.")
    result = estimate(chain, opts, len(args.seeds), args.estimate_warmup, args.estimate_steps)
    if args.json:
        write_json(args.json, result)


def run_job(args: argparse.Namespace, output: Path) -> None:
    """The main job of ``args`` in ``output``: the stages (those not done yet), the results and the report."""
    from quant_mimic.atomic import write_text

    job = resolve_job(args, output)
    data = resolve_data(args, output)
    chain = job.chain
    smoke = list(chain.smoke_opts) if job.smoke else []
    extra = smoke + (data.opts() if data else []) + list(args.opts)
    if args.estimate:
        estimate_job(args, chain, data, extra)
        return
    if data is not None and not args.report_only and not args.dry_run:
        check_data(data)
    if not args.report_only and not args.dry_run:
        check_job(job, output)
    stages = chain_stages(output, args.seeds, data, chain, job.teacher_weights)
    train_args = data.args() if data else []
    if args.dry_run:
        prefix = "" if job.data_root is None else f"DETECTRON2_DATASETS={shlex.quote(str(job.data_root))} "
        for stage in stages:
            print(prefix + shlex.join(stage_command(stage, output, extra, train_args)))
        return
    start = time.time()
    if not args.report_only:
        output.mkdir(parents=True, exist_ok=True)
        write_text(output / JOB_RECORD, json.dumps(job.record(), indent=2) + "\n", RERUN_ADVICE)
        if data is not None:
            write_text(output / DATA_RECORD, json.dumps(data.record(), indent=2) + "\n", RERUN_ADVICE)
        results = {}
        for i, stage in enumerate(stages, 1):
            results[stage.name] = run_stage(stage, output, extra, i, len(stages), train_args, job)
            elapsed = time.time() - start
            print(f"    elapsed {elapsed / 60:.1f} min, {i}/{len(stages)} stages", flush=True)
        write_results(output, stages, results, chain)
    missing = [s.name for s in stages if read_final_metrics(output / s.name) is None]
    if missing:
        raise SystemExit(
            f"No report: stages {missing} have not finished; run the main job without --report-only."
        )
    print("Writing the report (model-zoo table with GFLOPs and CPU latency, pictures) ...", flush=True)
    index = write_stage_report(output, stages, repeats=3 if job.smoke else 20, data=data, job=job)
    print(
        f"Main job done in {(time.time() - start) / 60:.1f} min; results in {output / 'results.md'}, "
        f"report in {index}"
    )


if __name__ == "__main__":
    main()
