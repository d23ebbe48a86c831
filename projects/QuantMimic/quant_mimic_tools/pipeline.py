"""The main job: teacher -> quantized teacher -> students (scratch, mimic, Quantization Mimic), evaluated.

    python -m quant_mimic_tools.pipeline [--output output/shapes] [--seeds 0 1 2] [--smoke] [--report-only]

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
import statistics
import subprocess
import sys
import time
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
class Stage:
    name: str  # also the folder under --output
    config: str  # relative to the project's configs/
    description: str
    opts: list[str] = field(default_factory=list)


def chain(output: Path, seeds: list[int]) -> list[Stage]:
    """The stages in order; students get one stage per seed, teachers are shared."""
    teacher, teacher_q = output / "teacher_R18_2_FPN", output / "teacher_R18_2_FPN_quant"
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
            ["MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(teacher / "model_final.pth")],
        ),
        (
            "qm",
            "qm_R_tiny_FPN.yaml",
            "ResNet18-1-16 student, Quantization Mimic",
            ["MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(teacher_q / "model_final.pth")],
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


def run_stage(stage: Stage, output: Path, extra_opts: list[str], index: int, total: int) -> dict:
    out = output / stage.name
    done = read_final_metrics(out)
    if done is not None:
        print(f"[{index}/{total}] {stage.name}: done already, reusing {out}", flush=True)
        return done
    resume = (out / "last_checkpoint").exists()
    print(f"[{index}/{total}] {stage.name}: {stage.description}{' (resuming)' if resume else ''}", flush=True)
    cmd = [sys.executable, str(TRAIN_NET), "--config-file", str(CONFIGS / stage.config)]
    cmd += ["--resume"] if resume else []
    cmd += [*stage.opts, *extra_opts, "OUTPUT_DIR", str(out)]
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
                     **{k: finite_metric(m[f"bbox/{k}"]) for k in METRICS}})  # fmt: skip
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


def write_stage_report(output: Path, stages: list[Stage], repeats: int) -> Path:
    """The report of the finished chain: every model in the table and pictures; curves and the
    matching ratio for the first seed's students."""
    from .report import Run, write_report  # imports detectron2: not needed to list the chain

    runs = [Run(s.name, s.description, s.config, output / s.name) for s in stages]
    first_seed = [r for r in runs if "_seed" in r.name][:3]
    mimic = [r for r in first_seed if r.is_mimic]
    results = (output / "results.md").read_text()
    return write_report(
        output / "report", runs, first_seed, mimic, [("AP of every run, and over seeds", results)], repeats
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("output/shapes"), help="one folder per stage")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="student seeds")
    parser.add_argument("--smoke", action="store_true", help="tiny data set, 6 iterations per stage")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report of finished stages")
    args = parser.parse_args(argv)
    output = args.output.resolve()
    stages = chain(output, args.seeds)
    extra = SMOKE_OPTS if args.smoke else []
    start = time.time()
    if not args.report_only:
        results = {}
        for i, stage in enumerate(stages, 1):
            results[stage.name] = run_stage(stage, output, extra, i, len(stages))
            elapsed = time.time() - start
            print(f"    elapsed {elapsed / 60:.1f} min, {i}/{len(stages)} stages", flush=True)
        write_results(output, stages, results)
    missing = [s.name for s in stages if read_final_metrics(output / s.name) is None]
    if missing:
        raise SystemExit(
            f"No report: stages {missing} have not finished; run the main job without --report-only."
        )
    print("Writing the report (model-zoo table with GFLOPs and CPU latency, pictures) ...", flush=True)
    index = write_stage_report(output, stages, repeats=3 if args.smoke else 20)
    print(
        f"Main job done in {(time.time() - start) / 60:.1f} min; results in {output / 'results.md'}, "
        f"report in {index}"
    )


if __name__ == "__main__":
    main()
