"""Does Quantization Mimic beat plain mimic and training from scratch? Students trained to convergence
over seeds, paired differences with 95% confidence intervals, the paper's ablations, curves and
matching-ratio histograms.

    python -m quant_mimic_tools.study [--architecture fpn|single] [--output-dir output/study]
        [--teachers output/shapes] [--seeds 0 1 2 3 4] [--ablation-seeds 0 1] [--only main|ablations]
        [--arms NAME ...] [--max-iter 2000] [--eval-period 250] [--jobs 1] [--smoke] [--report-only]
        [--dry-run] [KEY VALUE ...]

Two architectures: ``fpn`` (the main job's ResNet18-1-16 FPN student of a ResNet18-1-2 FPN teacher, Q
on the FPN outputs) and ``single`` (the paper's VOC detector: RPN and ROIAlign on the stride-16 res4
map, post-ReLU, of a ResNet18-1-2 single-level teacher; default output ``output/study_single``). The
single-level study screens the quantizer stride: s = 1 (the paper's) and strides fitted to the teacher
(``MODEL.QUANTIZER.STRIDE_CODES`` 4, 8 and 16: the 99th percentile of the teacher's positive res4
activations spans that many codes), each with its own quantized teacher fine-tuned from the same
full-precision one; its runs go seed by seed over every arm.

The arms (rows) are the main comparison (scratch, mimic, QM: ``--seeds``, at least 5 for the claim) and
the paper's ablations (``--ablation-seeds``): Q on the teacher only (Table 5), Q(ReLU) in the student
without a teacher (Table 4), the power-of-2 quantizer (Table 6), lambda 0.1 and 10 (Table 8), the mimic
baseline without FEATURE_RELU, and QM with the paper's own loss scale (``NORMALIZE as_written``: 1/(2N),
lambda 1) kept stable by gradient clipping. Every arm shares the same teachers: by default the study's
own, in ``<output>/teachers``, the full-precision one trained on the students' schedule (then fine-tuned
with Q as in the main job), so that the teacher is trained at least as long as its students;
``--teachers DIR`` reuses teachers trained elsewhere (the main job's ``output/shapes``: 500 iterations).

Every student trains ``--max-iter`` iterations (learning rate x0.1 at 80%), evaluated on the val set
every ``--eval-period``; a run is *flat* when its last two evaluations differ by less than 1 AP. Each run
is an ordinary ``train_net.py`` run under ``<output>/<arm>_seed<N>``: finished runs are reused and
interrupted ones resumed, so the study can span sessions. The schedule is recorded in
``<output>/study.json`` and a different one on the same folder is refused. ``--jobs N`` trains N students
side by side (after the teachers), each with its share of the cores (data workers and torch threads): on a
GPU, many tiny students fit at once and the GPU is otherwise mostly idle.

Written to ``<output>/``: ``study.md`` (per-seed AP, mean +- std, flatness, paired differences QM-mimic
and mimic-scratch with t-distribution 95% CIs), ``study.json`` (the same numbers), ``ap_curves.png`` (val
AP against iterations, mean and +-1 std band over seeds per arm) and ``matching_ratio.png`` (the paper's
Fig. 5 per mimic arm, seed of the first main seed). ``--smoke``: the mini data set, 6 iterations per
run, for trying the command.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from quant_mimic.config import available_cores, default_num_workers
from quant_mimic.errors import QuantMimicInputError

from .chains import SHAPES
from .cli import add_overrides, add_seeds, make_parser
from .cli import run as run_command
from .results import is_evaluation, read_final_metrics, read_metrics
from .runner import TRAIN_NET, MainJob, Stage, run_stage, stage_command

METRIC = "bbox/AP"
FLAT_AP = 1.0  # a run is flat when its last two evaluations differ by less than this (AP points)


@dataclass(frozen=True)
class Arm:
    """One row of the study: ``teacher`` is "fp", "quant" or None (no teacher)."""

    name: str
    config: str  # relative to the project's configs/
    description: str
    teacher: str | None
    main: bool = False
    opts: tuple[str, ...] = ()


ARMS = (
    Arm("scratch", "shapes/student_R18_16_FPN_scratch.yaml", "ResNet18-1-16 from scratch", None, main=True),
    Arm("mimic", "shapes/mimic_R18_16_FPN.yaml", "mimic (Li et al.), full precision", "fp", main=True),
    Arm("qm", "qm_R_tiny_FPN.yaml", "Quantization Mimic", "quant", main=True),
    Arm("qm_teacher_only", "shapes/qm_teacher_only_R18_16_FPN.yaml", "Q on the teacher side only (Table 5)",
        "quant"),
    Arm("quant_only", "shapes/quant_only_R18_16_FPN.yaml", "Q(ReLU) in the student, no teacher (Table 4)", None),
    Arm("qm_pow2", "shapes/qm_pow2_R18_16_FPN.yaml", "power-of-2 quantizer (Table 6)", "quant"),
    Arm("qm_lambda01", "shapes/qm_lambda01_R18_16_FPN.yaml", "QM, lambda 0.1 (Table 8)", "quant"),
    Arm("qm_lambda10", "shapes/qm_lambda10_R18_16_FPN.yaml", "QM, lambda 10 (Table 8)", "quant"),
    Arm("mimic_no_relu", "shapes/mimic_R18_16_FPN.yaml", "mimic without FEATURE_RELU", "fp",
        opts=("MODEL.QUANT_MIMIC.FEATURE_RELU", "False")),
    Arm("qm_as_written", "qm_R_tiny_FPN.yaml", "QM, the paper's loss scale 1/(2N), gradient norm clipped at 10",
        "quant", opts=("MODEL.QUANT_MIMIC.NORMALIZE", "as_written", "SOLVER.CLIP_GRADIENTS.ENABLED", "True",
                       "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "10.0")),
    Arm("mimic_bottom_up", "shapes/mimic_bottom_up_R18_16_FPN.yaml",
        "mimic of the post-ReLU bottom-up stages res2..res5", "fp"),
    Arm("qm_bottom_up", "shapes/qm_bottom_up_R18_16_FPN.yaml",
        "QM on the post-ReLU bottom-up stages res2..res5 (teacher quantized there)", "quant_bottom_up"),
)  # fmt: skip
PAIRS = (("qm", "mimic"), ("mimic", "scratch"), ("qm", "scratch"))

_SINGLE = "shapes/{}_R18_16_single{}.yaml"
_CODES = (8, 16, 4)  # 4 codes is about s = 1 on this teacher (p99 of res4 about 4.2): last
SINGLE_ARMS = (
    Arm("scratch", _SINGLE.format("student", "_scratch"), "ResNet18-1-16 single level from scratch", None,
        main=True),
    Arm("mimic", _SINGLE.format("mimic", ""), "mimic (Li et al.), full precision", "fp", main=True),
    Arm("qm", _SINGLE.format("qm", ""), "Quantization Mimic, s = 1 (the paper's)", "quant", main=True),
    *(Arm(f"qm_k{k}", _SINGLE.format("qm", ""), f"QM, stride fitted: p99 of the teacher spans {k} codes",
          f"quant_k{k}") for k in _CODES),
    Arm("mimic_no_relu", _SINGLE.format("mimic", ""), "mimic without FEATURE_RELU", "fp",
        opts=("MODEL.QUANT_MIMIC.FEATURE_RELU", "False")),
    Arm("mimic_lambda01", _SINGLE.format("mimic", ""), "mimic, lambda 0.1", "fp",
        opts=("MODEL.QUANT_MIMIC.LOSS_WEIGHT", "0.1")),
    Arm("qm_k16_lambda01", _SINGLE.format("qm", ""), "QM, stride fitted to 16 codes, lambda 0.1", "quant_k16",
        opts=("MODEL.QUANT_MIMIC.LOSS_WEIGHT", "0.1")),
)  # fmt: skip


@dataclass(frozen=True)
class TeacherRun:
    """One teacher of a study, in ``<teachers>/<name>``: the full-precision one ("fp") trains on the
    students' schedule where the study trains its own; the others are fine-tuned from it with Q."""

    name: str
    config: str  # relative to the project's configs/
    description: str
    opts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Architecture:
    """The detector a study compares students of: its arms, its teachers (by the keys ``Arm.teacher``
    names; "fp" first), whether students read their teacher's config from the teacher run's config.yaml
    (which records a fitted stride), and whether runs go seed by seed over every arm."""

    name: str
    arms: tuple[Arm, ...]
    teachers: dict[str, TeacherRun]
    teacher_config_from_run: bool
    seed_major: bool
    default_output: str
    pairs: tuple[tuple[str, str], ...] = PAIRS


ARCHITECTURES = {
    "fpn": Architecture(
        "fpn",
        ARMS,
        {
            "fp": TeacherRun(SHAPES.teacher.name, SHAPES.teacher.config, SHAPES.teacher.description),
            "quant": TeacherRun(
                SHAPES.teacher_quant.name, SHAPES.teacher_quant.config, SHAPES.teacher_quant.description
            ),
            "quant_bottom_up": TeacherRun(
                "teacher_R18_2_FPN_quant_bottom_up",
                "shapes/teacher_R18_2_FPN_quant_bottom_up.yaml",
                "quantized teacher, Q on the bottom-up stages",
            ),
        },
        teacher_config_from_run=False,
        seed_major=False,
        default_output="output/study",
        pairs=(
            *PAIRS,
            ("qm_bottom_up", "mimic_bottom_up"),
            ("qm_bottom_up", "qm"),
            ("qm_bottom_up", "mimic_no_relu"),
        ),
    ),
    "single": Architecture(
        "single",
        SINGLE_ARMS,
        {
            "fp": TeacherRun(
                "teacher_R18_2_single",
                "shapes/teacher_R18_2_single.yaml",
                "full-precision teacher, single level",
            ),
            "quant": TeacherRun(
                "teacher_R18_2_single_quant",
                "shapes/teacher_R18_2_single_quant.yaml",
                "quantized teacher, s = 1",
            ),
            **{
                f"quant_k{k}": TeacherRun(
                    f"teacher_R18_2_single_quant_k{k}",
                    "shapes/teacher_R18_2_single_quant.yaml",
                    f"quantized teacher, stride fitted to {k} codes",
                    ("MODEL.QUANTIZER.STRIDE_CODES", str(k)),
                )
                for k in _CODES
            },
        },
        teacher_config_from_run=True,
        seed_major=True,
        default_output="output/study_single",
        pairs=(
            *PAIRS,
            ("mimic_no_relu", "mimic"),
            ("mimic_lambda01", "mimic"),
            ("qm_k16_lambda01", "qm_k16"),
            *((f"qm_k{k}", "mimic") for k in _CODES),
            *((f"qm_k{k}", "qm") for k in _CODES),
        ),
    ),
}


@dataclass(frozen=True)
class PaperAblation:
    """An ablation arm beside the paper: the arm it is compared with (ours: paired over the seeds both
    ran), and the paper's numbers for the ablation and for that arm (empty: not in the paper)."""

    reference: str
    metric: str
    ablation: tuple[float, ...] = ()
    baseline: tuple[float, ...] = ()


_WIDER = "WIDER FACE val AP easy / medium / hard"
PAPER_ABLATIONS = {
    "qm_teacher_only": PaperAblation("qm", f"{_WIDER} (Table 5)", (73.0, 59.3, 25.6), (73.9, 62.1, 27.6)),
    "quant_only": PaperAblation("scratch", f"{_WIDER} (Table 4)", (71.9, 55.2, 23.7), (71.3, 55.4, 23.8)),
    "qm_pow2": PaperAblation("qm", f"{_WIDER} (Table 6)", (73.0, 59.5, 26.6), (73.9, 62.1, 27.6)),
    "qm_lambda01": PaperAblation("qm", "VOC07 test mAP (Table 8)", (43.0,), (47.0,)),
    "qm_lambda10": PaperAblation("qm", "VOC07 test mAP (Table 8)", (44.1,), (47.0,)),
    "mimic_no_relu": PaperAblation("mimic", "not in the paper (its mimic features are after the ReLU)"),
    "qm_as_written": PaperAblation("qm", "not in the paper (its own loss scale; ours is per element)"),
}


def schedule_opts(max_iter: int, eval_period: int, lr_step: int | None = None) -> list[str]:
    """The students' schedule: ``max_iter`` iterations, learning rate x0.1 at ``lr_step`` (default 80%),
    evaluations (and checkpoints, for resuming) every ``eval_period``."""
    lr_step = default_lr_step(max_iter) if lr_step is None else lr_step
    return ["SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", f"({lr_step},)",
            "TEST.EVAL_PERIOD", str(eval_period), "SOLVER.CHECKPOINT_PERIOD", str(eval_period)]  # fmt: skip


def default_lr_step(max_iter: int) -> int:
    """The learning-rate step of a ``max_iter`` schedule unless ``--lr-step`` says otherwise: 80%."""
    return int(0.8 * max_iter)


def student_stages(
    arms: list[Arm],
    seeds: dict[bool, list[int]],
    output: Path,
    teachers: Path,
    schedule: list[str],
    architecture: Architecture = ARCHITECTURES["fpn"],
) -> list[Stage]:
    """One ``Stage`` per arm and seed (``seeds[arm.main]``), reading the teachers from ``teachers``.
    Seed-major (every arm of the first seed, then of the next): a study stopped part-way already holds
    complete same-seed comparisons. The main comparison comes before the ablations, unless the
    architecture goes seed by seed over every arm (a screening)."""

    def teacher_opts(key: str) -> list[str]:
        run = teachers / architecture.teachers[key].name
        opts = ["MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(run / "model_final.pth")]
        if architecture.teacher_config_from_run:
            opts += ["MODEL.QUANT_MIMIC.TEACHER_CONFIG", str(run / "config.yaml")]
        return opts

    runs = sorted(
        ((position, arm, seed) for arm in arms for position, seed in enumerate(seeds[arm.main])),
        key=lambda run: (run[0], not run[1].main) if architecture.seed_major else (not run[1].main, run[0]),
    )  # stable: arm order within a seed
    stages = []
    for _, arm, seed in runs:
        teacher = [] if arm.teacher is None else teacher_opts(arm.teacher)
        opts = [*teacher, *arm.opts, *schedule, "SEED", str(seed)]
        stages.append(Stage(f"{arm.name}_seed{seed}", arm.config, f"{arm.description}, seed {seed}", opts))
    return stages


def teacher_chain(
    teachers: Path,
    own: bool,
    schedule: list[str],
    architecture: Architecture = ARCHITECTURES["fpn"],
    keys: Iterable[str] | None = None,
) -> list[Stage]:
    """The stages of the teachers ``keys`` (default: all) of ``architecture``: the full-precision one,
    then those fine-tuned from it with Q. The study's own teachers (``own``, in ``<output>/teachers``)
    train the full-precision teacher on the students' schedule: a teacher trained less than its students
    (the main job's 500 iterations, where a 2000-iteration scratch student reaches 60 AP) would be no
    teacher. The Q fine-tuning keeps its config's 100 iterations."""
    keys = set(architecture.teachers if keys is None else keys) | {"fp"}
    fp = architecture.teachers["fp"]
    stages = [Stage(fp.name, fp.config, fp.description, list(schedule) if own else [])]
    weights = str(teachers / fp.name / "model_final.pth")
    for key, run in architecture.teachers.items():
        if key != "fp" and key in keys:
            stages.append(Stage(run.name, run.config, run.description, ["MODEL.WEIGHTS", weights, *run.opts]))
    return stages


@dataclass
class SharedMachine(MainJob):
    """The environment of one of ``jobs`` students trained side by side: its share of the cores for
    torch's threads."""

    jobs: int = 1

    def env(self) -> dict:
        return {**super().env(), "OMP_NUM_THREADS": str(max(1, available_cores() // self.jobs))}


def run_students(
    stages: list[Stage],
    output: Path,
    extra: list[str],
    first: int,
    total: int,
    jobs: int,
    until: int | None = None,
) -> None:
    """Run ``stages`` (numbered from ``first`` of ``total``), ``jobs`` at a time. Side by side, each run
    gets its share of the data workers (config overrides in ``extra`` come after it, so they win) and of
    torch's threads; a failed run does not stop the others, and the study fails at the end naming them.
    A finished run whose last evaluation comes before iteration ``until`` resumes (an extension)."""
    if jobs == 1:
        for i, stage in enumerate(stages, first):
            run_stage(stage, output, extra, i, total, until=until)
        return
    # a share of the GPU rule (half the cores) on every device: the runs trained so far each had one
    # worker, and a resumed run replays its batches exactly only with the same loading
    shared = ["DATALOADER.NUM_WORKERS", str(max(1, default_num_workers() // jobs)), *extra]
    machine = SharedMachine(jobs=jobs)
    with ThreadPoolExecutor(jobs) as pool:
        futures = {
            stage.name: pool.submit(
                run_stage, stage, output, shared, i, total, job=machine, tag=True, until=until
            )
            for i, stage in enumerate(stages, first)
        }
    failed = [f"{name}: {future.exception()}" for name, future in futures.items() if future.exception()]
    if failed:
        raise SystemExit(f"study: {len(failed)} of {len(stages)} runs failed:\n" + "\n".join(failed))


def sample_std(values: Iterable[float]) -> float:
    """The sample standard deviation (``statistics.stdev``), NaN where a value is NaN (a run with no
    detections): ``statistics.stdev`` raises on NaN."""
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else statistics.stdev(values)


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t-distribution confidence interval of the mean of ``values`` (n >= 2)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        raise ValueError("A confidence interval needs at least 2 values.")
    mean = statistics.mean(values)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sample_std(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def evaluations(output_dir: Path) -> list[tuple[int, float]]:
    """(iteration, AP) of every evaluation in a run's metrics.json."""
    return [(r["iteration"], r[METRIC]) for r in read_metrics(output_dir) if is_evaluation(r) and METRIC in r]


def paired_differences(runs_a: dict, runs_b: dict) -> tuple[list[int], list[float]]:
    """The seeds both arms ran, and arm a's AP minus arm b's at each."""
    common = sorted(set(runs_a) & set(runs_b))
    return common, [runs_a[s]["AP"] - runs_b[s]["AP"] for s in common]


TEST_METRICS = "test_metrics.json"  # a run's final model on the test split, written by --test


def summarize(
    output: Path,
    arms: list[Arm],
    seeds: dict[bool, list[int]],
    pairs: Iterable[tuple[str, str]] = PAIRS,
    split: str = "val",
) -> dict:
    """Per-arm per-seed final AP, mean / std, flatness, and the paired differences of ``pairs``. On
    ``split`` "test", the AP of each run's final model on the test split (``<run>/test_metrics.json``;
    runs without one are left out); flatness is the val curve's either way."""
    summary: dict = {"arms": {}, "pairs": {}, "split": split}
    for arm in arms:
        runs = {}
        for seed in seeds[arm.main]:
            final = read_final_metrics(output / f"{arm.name}_seed{seed}")
            if final is not None and split == "test":
                record = output / f"{arm.name}_seed{seed}" / TEST_METRICS
                final = json.loads(record.read_text()) if record.is_file() else None
            if final is None or final.get(METRIC) is None:
                continue
            points = evaluations(output / f"{arm.name}_seed{seed}")
            flat = len(points) >= 2 and abs(points[-1][1] - points[-2][1]) < FLAT_AP
            runs[seed] = {"AP": final[METRIC], "AP50": final.get("bbox/AP50"), "flat": flat}
        aps = [r["AP"] for r in runs.values()]
        summary["arms"][arm.name] = {
            "description": arm.description,
            "runs": runs,
            "mean": statistics.mean(aps) if aps else None,
            "std": sample_std(aps) if len(aps) > 1 else None,
        }
    for a, b in pairs:
        if a not in summary["arms"] or b not in summary["arms"]:
            continue
        common, diffs = paired_differences(summary["arms"][a]["runs"], summary["arms"][b]["runs"])
        entry: dict = {"seeds": common, "differences": diffs}
        if len(diffs) >= 2:
            mean, low, high = t_interval(diffs)
            entry.update({"mean": mean, "ci95": [low, high]})
        summary["pairs"][f"{a}-{b}"] = entry
    summary["ablations"] = {}
    for name, paper in PAPER_ABLATIONS.items():
        if name not in summary["arms"] or paper.reference not in summary["arms"]:
            continue
        common, diffs = paired_differences(
            summary["arms"][name]["runs"], summary["arms"][paper.reference]["runs"]
        )
        summary["ablations"][name] = {
            "reference": paper.reference,
            "seeds": common,
            "differences": diffs,
            "mean": statistics.mean(diffs) if diffs else None,
            "paper_differences": [x - y for x, y in zip(paper.ablation, paper.baseline)],
        }
    return summary


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _ap(x: float) -> str:
    """A run's AP; NaN is what detectron2's COCO evaluation gives a model with no detections."""
    return "no detections" if math.isnan(x) else f"{x:.1f}"


def markdown(summary: dict, schedule: dict) -> str:
    """The study's tables as Markdown."""
    lines = [
        f"# Study ({schedule.get('architecture', 'fpn')}): {schedule['max_iter']} iterations per student, "
        f"evaluated every {schedule['eval_period']}; AP on the {summary.get('split', 'val')} split",
        "",
        "| arm | what | seeds | AP per seed | mean | std | flat at the end |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, arm in summary["arms"].items():
        runs = arm["runs"]
        per_seed = ", ".join(f"{s}: {_ap(r['AP'])}" for s, r in runs.items()) or "-"
        flat = f"{sum(r['flat'] for r in runs.values())}/{len(runs)}" if runs else "-"
        lines.append(
            f"| {name} | {arm['description']} | {len(runs)} | {per_seed} | {_fmt(arm['mean'])} "
            f"| {_fmt(arm['std'])} | {flat} |"
        )
    lines += ["", "| paired difference (same seed) | seeds | mean | 95% CI (t) |", "|---|---|---|---|"]
    for name, pair in summary["pairs"].items():
        ci = pair.get("ci95")
        ci_text = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-"
        lines.append(f"| {name} | {len(pair['seeds'])} | {_fmt(pair.get('mean'), 2)} | {ci_text} |")
    if summary.get("ablations"):
        lines += [
            "",
            "| ablation | against | ours: AP difference, mean (seeds) | paper: difference | the paper's numbers |",
            "|---|---|---|---|---|",
        ]
    for name, row in summary.get("ablations", {}).items():
        paper = PAPER_ABLATIONS[name]
        ours = "-"
        if row["seeds"]:
            mean = "no detections" if math.isnan(row["mean"]) else f"{row['mean']:+.1f}"
            ours = f"{mean} ({', '.join(map(str, row['seeds']))})"
        theirs = " / ".join(f"{d:+.1f}" for d in row["paper_differences"]) or "-"
        numbers = paper.metric
        if paper.ablation:
            numbers = f"{' / '.join(map(str, paper.ablation))} against {' / '.join(map(str, paper.baseline))}, {numbers}"
        lines.append(f"| {name} | {row['reference']} | {ours} | {theirs} | {numbers} |")
    return "\n".join(lines) + "\n"


def _finish(fig, ax, path: Path, ylabel: str, title: str) -> Path:
    """Label an against-iterations plot and write it as a PNG."""
    from .report.figure import save_figure

    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def ap_curves(output: Path, arms: list[Arm], seeds: dict[bool, list[int]], path: Path) -> Path:
    """PNG: val AP against iterations, the mean over seeds per arm with a +-1 std band."""
    from .report.figure import plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for arm in arms:
        finished = [
            s for s in seeds[arm.main] if read_final_metrics(output / f"{arm.name}_seed{s}") is not None
        ]
        curves = [
            dict(evaluations(output / f"{arm.name}_seed{s}")) for s in finished
        ]  # as the tables: finished runs
        curves = [c for c in curves if c]
        if not curves:
            continue
        iterations = sorted(set.intersection(*(set(c) for c in curves)))
        means = [statistics.mean(c[i] for c in curves) for i in iterations]
        stds = [sample_std(c[i] for c in curves) if len(curves) > 1 else 0.0 for i in iterations]
        (line,) = ax.plot(iterations, means, marker="o", label=f"{arm.name} ({len(curves)} seeds)")
        ax.fill_between(
            iterations, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
            color=line.get_color(), alpha=0.2,
        )  # fmt: skip
    return _finish(fig, ax, path, "box AP on the val set", "students: mean and +-1 std over seeds")


def difference_curve(
    output: Path, a: Arm, b: Arm, seeds: dict[bool, list[int]]
) -> list[tuple[int, float, float, float]]:
    """(iteration, mean, CI low, CI high) of arm ``a``'s val AP minus arm ``b``'s at every evaluation
    both finished runs of a seed made, paired by seed (the t-interval needs 2 seeds; with one, the band
    is the point)."""
    common = [s for s in seeds[a.main] if s in seeds[b.main]]
    curves = []
    for seed in common:
        runs = [output / f"{arm.name}_seed{seed}" for arm in (a, b)]
        if all(read_final_metrics(run) is not None for run in runs):
            ours, theirs = (dict(evaluations(run)) for run in runs)
            curves.append({i: ours[i] - theirs[i] for i in ours.keys() & theirs.keys()})
    if not curves:
        return []
    points = []
    for i in sorted(set.intersection(*(set(c) for c in curves))):
        diffs = [c[i] for c in curves]
        points.append((i, *t_interval(diffs)) if len(diffs) > 1 else (i, diffs[0], diffs[0], diffs[0]))
    return points


def difference_figure(output: Path, pairs: list[tuple[Arm, Arm]], seeds: dict, path: Path) -> Path | None:
    """PNG: val AP difference against iterations per pair (mean over seeds, 95% CI band): whether an
    early lead lasts to convergence."""
    from .report.figure import plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    drawn = 0
    for a, b in pairs:
        points = difference_curve(output, a, b, seeds)
        if not points:
            continue
        iterations, means, lows, highs = zip(*points)
        n = len([s for s in seeds[a.main] if s in seeds[b.main]])
        (line,) = ax.plot(iterations, means, marker="o", label=f"{a.name} - {b.name} (up to {n} seeds)")
        ax.fill_between(iterations, lows, highs, color=line.get_color(), alpha=0.2)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.axhline(0.0, color="black", linewidth=0.8)
    return _finish(fig, ax, path, "AP difference on the val set (same seed)",
                   "paired AP differences: mean and 95% CI over seeds")  # fmt: skip


def quantizer_of(run: Path) -> dict:
    """The quantizer a run trained with, from its config.yaml: ``{"stride": s, "stride_codes": K}`` where
    it quantizes (s fitted where K > 0), else ``{}``."""
    import yaml

    record = run / "config.yaml"
    q = (
        (yaml.safe_load(record.read_text()) or {}).get("MODEL", {}).get("QUANTIZER", {})
        if record.is_file()
        else {}
    )
    return {"stride": q.get("STRIDE"), "stride_codes": q.get("STRIDE_CODES", 0)} if q.get("ENABLED") else {}


RECORD_FILES = ("metrics.json", "config.yaml", TEST_METRICS)  # per run: small, and enough to redo the tables


def export_records(
    output: Path, teachers: Path, teacher_runs: list[str], runs: list[str], records: Path
) -> None:
    """Copy what the study's evidence is into ``records`` (small files, for the repository): its
    study.json and study*.md, its figures, and each finished teacher's and student's metrics.json,
    config.yaml and test metrics (not checkpoints)."""
    import shutil

    records.mkdir(parents=True, exist_ok=True)
    for name in (
        "study.json",
        "study.md",
        "study_test.md",
        "ap_curves.png",
        "ap_differences.png",
        "matching_ratio.png",
    ):
        if (output / name).is_file():
            shutil.copy2(output / name, records / name)
    for folder, names in ((teachers, teacher_runs), (output, runs)):
        for name in names:
            if read_final_metrics(folder / name) is None:  # unfinished: resumed later, recorded then
                continue
            for file in RECORD_FILES:
                if (folder / name / file).is_file():
                    (records / "runs" / name).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(folder / name / file, records / "runs" / name / file)
    print(f"study: records copied to {records}", file=sys.stderr)


def evaluate_on_test(output: Path, arms: list[Arm], seeds: dict[bool, list[int]], dataset: str) -> None:
    """Evaluate every finished run's final model once on ``dataset`` (the test split), as a user would
    (``train_net.py --eval-only``; a QM run's exported student), and record its COCO metrics in
    ``<run>/test_metrics.json``. A run that has the record is not evaluated again."""
    import subprocess

    for arm in arms:
        for seed in seeds[arm.main]:
            run = output / f"{arm.name}_seed{seed}"
            if read_final_metrics(run) is None or (run / TEST_METRICS).is_file():
                continue
            student = (run / "student_config.yaml").is_file() and (run / "student_final.pth").is_file()
            config, weights = (
                ("student_config.yaml", "student_final.pth")
                if student
                else ("config.yaml", "model_final.pth")
            )
            cmd = [sys.executable, str(TRAIN_NET), "--eval-only", "--config-file", str(run / config),
                   "MODEL.WEIGHTS", str(run / weights), "DATASETS.TEST", f"('{dataset}',)",
                   "OUTPUT_DIR", str(run)]  # fmt: skip
            print(f"study: {run.name}: evaluating {weights} on {dataset}", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            rows = [
                line.split("copypaste: ", 1)[1] for line in proc.stdout.splitlines() if "copypaste: " in line
            ]
            if proc.returncode != 0 or len(rows) < 2:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise SystemExit(f"study: the test evaluation of {run} failed: {tail[0]}")
            keys, values = rows[-2].split(","), rows[-1].split(",")
            metrics = {f"bbox/{k}": float(v) for k, v in zip(keys, values)}
            tmp = run / f".{TEST_METRICS}.tmp"
            tmp.write_text(json.dumps({**metrics, "dataset": dataset, "weights": weights}, indent=2))
            tmp.replace(run / TEST_METRICS)


def matching_figure(output: Path, arms: list[Arm], seed: int, dataset: str, path: Path) -> dict[str, float]:
    """The paper's Fig. 5 for every finished arm with a teacher (seed ``seed``); mean ratio per arm."""
    from .report.matching import matching_histogram
    from .report.runs import Run

    runs = [
        Run(arm.name, arm.description, arm.config, output / f"{arm.name}_seed{seed}")
        for arm in arms
        if arm.teacher is not None and read_final_metrics(output / f"{arm.name}_seed{seed}") is not None
    ]
    return matching_histogram(runs, dataset, path) if runs else {}


def check_schedule(output: Path, schedule: dict) -> None:
    """Record the schedule in ``<output>/study.json``; refuse a different one on the same folder, except
    an extension: the same schedule with a larger ``max_iter`` (the finished students then resume and
    train on at the last learning rate; the teachers are not retrained). Raises QuantMimicInputError."""
    record = output / "study.json"
    if record.is_file():
        recorded = json.loads(record.read_text()).get("schedule")
        if recorded is not None:
            # a record written before --lr-step / --architecture had the default step of its max_iter
            # and the FPN architecture
            recorded = {"lr_step": default_lr_step(recorded["max_iter"]), "architecture": "fpn", **recorded}
            same = {k: v for k, v in recorded.items() if k not in ("max_iter", "extended_from")}
            asked = {
                k: v
                for k, v in {"architecture": "fpn", **schedule}.items()
                if k not in ("max_iter", "extended_from")
            }
            if same == asked and schedule["max_iter"] > recorded["max_iter"]:
                schedule["extended_from"] = recorded.get("extended_from", recorded["max_iter"])
                print(
                    f"study: extending the students of {output} from {recorded['max_iter']} to "
                    f"{schedule['max_iter']} iterations (learning rate x0.1 still at {schedule['lr_step']})",
                    file=sys.stderr,
                )
            elif same == asked and schedule["max_iter"] == recorded["max_iter"]:
                if "extended_from" in recorded:
                    schedule["extended_from"] = recorded["extended_from"]
            else:
                raise QuantMimicInputError(
                    f"{output} holds a study with schedule {recorded}, not {schedule}: use "
                    "another --output-dir, or the same --eval-period / --lr-step / --smoke (a larger --max-iter "
                    "with the same --lr-step extends it)."
                )
    update_record(output, {"schedule": schedule})


def update_record(output: Path, fields: dict) -> None:
    """Write ``fields`` into ``<output>/study.json``, keeping what it holds besides them."""
    record = output / "study.json"
    output.mkdir(parents=True, exist_ok=True)
    previous = json.loads(record.read_text()) if record.is_file() else {}
    record.write_text(json.dumps({**previous, **fields}, indent=2))


def get_parser() -> argparse.ArgumentParser:
    parser = make_parser("study", __doc__)
    parser.add_argument(
        "--architecture",
        choices=tuple(ARCHITECTURES),
        default="fpn",
        help="the detector: fpn (the main job's) or single (the paper's single-level one)",
    )
    parser.add_argument("--output-dir", dest="output", type=Path, metavar="DIR", help="the study's folder "
                        "(default: output/study, output/study_single for the single-level architecture, "
                        "output/study_smoke with --smoke)")  # fmt: skip
    parser.add_argument("--teachers", type=Path, metavar="DIR", help="a folder with teachers trained elsewhere, e.g. the main "
                        "job's output/shapes (default: the study's own, <output>/teachers, on the students' "
                        "schedule)")  # fmt: skip
    add_seeds(parser, "main comparison seeds", [0, 1, 2, 3, 4])
    add_seeds(parser, "seeds of the ablation arms", [0, 1], flag="--ablation-seeds")
    parser.add_argument("--only", choices=("main", "ablations"), help="run one part of the study")
    parser.add_argument("--arms", nargs="+", metavar="ARM", help="run only these arms (names as in the tables)")  # fmt: skip
    parser.add_argument("--max-iter", type=int, default=2000, help="iterations per student")
    parser.add_argument("--eval-period", type=int, default=250, help="evaluate (and checkpoint) every N")
    parser.add_argument("--lr-step", type=int, help="iteration of the learning rate's x0.1 step (default: 80%% "
                        "of --max-iter); a larger --max-iter with a study's own step extends its students")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, help="students trained side by side (e.g. on a GPU)")
    parser.add_argument("--smoke", action="store_true", help="the mini data set, 6 iterations per run")
    parser.add_argument("--report-only", action="store_true", help="only (re)write the tables and figures")
    parser.add_argument("--test", action="store_true", help="evaluate every finished run's final model once on "
                        "the test split (choices are made on val) and write the tables on test too: study_test.md")  # fmt: skip
    parser.add_argument("--records", type=Path, metavar="DIR", help="also copy the study's record, figures "
                        "and each run's metrics.json / config.yaml / test metrics (no checkpoints) to DIR, "
                        "e.g. projects/QuantMimic/docs/records/study_single")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print each run's train_net.py command")
    add_overrides(parser, "every student's config")
    return parser


def main(argv: list[str] | None = None) -> None:
    run_command("study", get_parser(), run_study, argv)


def run_study(args: argparse.Namespace) -> None:
    """The study of ``args``: its runs (those not done yet), tables and figures, holding its folder's lock."""
    if len(args.opts) % 2:
        get_parser().error(f"config overrides come in KEY VALUE pairs, got {args.opts}")
    if args.smoke:
        args.max_iter, args.eval_period = 6, 3
    if args.jobs < 1:
        get_parser().error("--jobs must be at least 1")
    if args.max_iter < 2 * args.eval_period:
        get_parser().error("--max-iter must allow at least two evaluations: make it >= 2 x --eval-period")
    if args.lr_step is not None and not 0 < args.lr_step < args.max_iter:
        get_parser().error("--lr-step must be inside the schedule: 0 < --lr-step < --max-iter")
    architecture = ARCHITECTURES[args.architecture]
    output = args.output or Path("output/study_smoke" if args.smoke else architecture.default_output)
    teachers = args.teachers or output / "teachers"
    unknown = set(args.arms or ()) - {a.name for a in architecture.arms}
    if unknown:
        get_parser().error(f"--arms: {sorted(unknown)} are not arms of {args.architecture}")
    arms = [
        a
        for a in architecture.arms
        if (args.only is None or a.main == (args.only == "main")) and (not args.arms or a.name in args.arms)
    ]
    seeds = {True: args.seeds, False: args.ablation_seeds}
    lr_step = default_lr_step(args.max_iter) if args.lr_step is None else args.lr_step
    schedule = {"max_iter": args.max_iter, "eval_period": args.eval_period, "lr_step": lr_step,
                "smoke": args.smoke, "teachers": str(teachers), "architecture": args.architecture}  # fmt: skip
    extra = (list(SHAPES.smoke_opts) if args.smoke else []) + list(args.opts)
    run_schedule = schedule_opts(args.max_iter, args.eval_period, lr_step)
    needed = {a.teacher for a in arms if a.teacher is not None}
    teacher_stages = teacher_chain(teachers, args.teachers is None, run_schedule, architecture, needed)
    stages = student_stages(arms, seeds, output, teachers, run_schedule, architecture)
    if args.dry_run:
        for stage in teacher_stages:
            print(" ".join(stage_command(stage, teachers, extra)))
        for stage in stages:
            print(" ".join(stage_command(stage, output, extra)))
        return
    from quant_mimic.engine.run_lock import run_lock

    with run_lock(output, option="--output-dir"):  # one study per folder; its runs lock their own folders
        val = "quantmimic_shapes_mini_val" if args.smoke else "quantmimic_shapes_val"
        if not args.report_only:
            check_schedule(output, schedule)
            if args.jobs > 1:  # once, before the runs side by side would each generate it
                import quant_mimic.data  # noqa: F401 (registers the built-in data sets)
                from quant_mimic.data.builtin import ensure_dataset_generated

                ensure_dataset_generated(val)
            total = len(teacher_stages) + len(stages)
            for i, stage in enumerate(teacher_stages, 1):
                run_stage(stage, teachers, list(SHAPES.smoke_opts) if args.smoke else [], i, total)
            run_students(
                stages, output, extra, len(teacher_stages) + 1, total, args.jobs, until=args.max_iter
            )
        summary = summarize(output, arms, seeds, architecture.pairs)
        if (
            args.report_only
        ):  # the tables of the study as it was run: its record's schedule, not these options
            record = output / "study.json"
            schedule = (
                json.loads(record.read_text()).get("schedule", schedule) if record.is_file() else schedule
            )
        summary["schedule"] = schedule
        summary["teachers"] = {
            stage.name: {
                "AP": final.get(METRIC),
                "AP50": final.get("bbox/AP50"),
                **quantizer_of(teachers / stage.name),
            }
            for stage in teacher_stages
            if (final := read_final_metrics(teachers / stage.name)) is not None
        }
        ap_curves(output, arms, seeds, output / "ap_curves.png")
        by_name = {a.name: a for a in arms}
        difference_figure(
            output,
            [
                (by_name[a], by_name[b])
                for a, b in architecture.pairs
                if a in by_name and b in by_name and b != "qm"
            ],
            seeds,
            output / "ap_differences.png",
        )
        summary["matching_ratio_mean"] = matching_figure(
            output, arms, args.seeds[0], val, output / "matching_ratio.png"
        )
        (output / "study.md").write_text(markdown(summary, schedule))
        update_record(output, summary)
        print(markdown(summary, schedule))
        if args.test:
            test = "quantmimic_shapes_mini_test" if args.smoke else "quantmimic_shapes_test"
            evaluate_on_test(output, arms, seeds, test)
            on_test = summarize(output, arms, seeds, architecture.pairs, split="test")
            (output / "study_test.md").write_text(markdown(on_test, schedule))
            update_record(output, {"test": on_test})
            print(markdown(on_test, schedule))
        if args.records:
            export_records(
                output, teachers, [s.name for s in teacher_stages], [s.name for s in stages], args.records
            )
        print(
            f"study: tables in {output / 'study.md'}, curves in {output / 'ap_curves.png'}", file=sys.stderr
        )


if __name__ == "__main__":
    main()
