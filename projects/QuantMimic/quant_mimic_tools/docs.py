"""The measured tables of the documentation, generated from their records.

    python -m quant_mimic_tools.docs            # rewrite every table (make docs)
    python -m quant_mimic_tools.docs --check    # exit 1 if a committed page differs from its records

A page holds a table between marker comments::

    <!-- table:main_job -->
    (generated: everything here is replaced)
    <!-- /table -->

Each table name is a function of the JSON records in ``projects/QuantMimic/docs/records/``, which hold
the measurements in the formats the commands write: ``results.json`` of the main job
(``quant_mimic_tools.pipeline``), ``model_zoo.json`` rows of its report, ``study.json`` of
``quant_mimic_tools.study``, ``--json`` of ``quant_mimic_tools.benchmark`` and of
``quant_mimic_tools.evaluate_deployed --sweep``, each with a ``source`` entry (command, machine, date) added. A
new run's file dropped in under the record's name (see ``RECORDS`` below) and ``make docs`` regenerate
the pages. A record that is absent gives "not yet measured". Plain Python: no torch, no detectron2.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Callable

from .chains import CHAINS
from .evaluate_deployed import KEYS as SWEEP_KEYS

PROJECT = Path(__file__).resolve().parents[1]
ROOT = PROJECT.parents[1]
RECORDS = PROJECT / "docs" / "records"
RECORDS_LINK = "projects/QuantMimic/docs/records"  # from the repository root
PAGES = (
    "README.md",
    "MODEL_ZOO.md",
    "projects/QuantMimic/README.md",
    "projects/QuantMimic/docs/STUDY.md",
    "projects/QuantMimic/docs/BENCHMARKS.md",
    "projects/QuantMimic/docs/TESTING.md",
)
MARKER = re.compile(r"(<!-- table:([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.DOTALL)
NOT_MEASURED = "not yet measured"


class Records:
    """The records folder; ``get(name)`` is the parsed ``<name>.json`` or None when it is absent."""

    def __init__(self, folder: Path = RECORDS):
        self.folder = Path(folder)

    def get(self, name: str) -> dict | list | None:
        path = self.folder / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None


# ---- formatting


def num(x, digits: int = 1) -> str:
    """A number with ``digits`` decimals; "-" for None, "no detections" for NaN (COCO's AP of none)."""
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "no detections"
    return f"{x:.{digits}f}"


def signed(x, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "no detections"
    return f"{x:+.{digits}f}"


def percent(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def source_line(record: dict, name: str, command: bool = True) -> str:
    """One line: the command, machine and date of a record, and a link to it (commit ids stay in the
    record)."""
    src = record.get("source", {}) if isinstance(record, dict) else {}
    parts = []
    if command and src.get("command"):
        parts.append(f"`{src['command']}`")
    if src.get("machine"):
        parts.append(f"on {src['machine']}")
    if src.get("date"):
        parts.append(src["date"])
    where = f"[record]({_link(name)})"
    return (", ".join(parts) + ". " if parts else "Source not recorded. ") + where + "."


_LINK_BASE = {"": ""}  # set per page by render(): the relative path from the page to the repository root


def _link(name: str) -> str:
    return f"{_LINK_BASE['']}{RECORDS_LINK}/{name}.json"


def absent(name: str) -> str:
    return f"*{NOT_MEASURED}* (no `{RECORDS_LINK}/{name}.json`)."


# ---- the main job


def _runs(record: dict) -> list[dict]:
    return record.get("runs", [])


def main_job(records: Records) -> str:
    """README: the main job's five models, AP and AP50, one seed."""
    rec = records.get("main_job")
    if rec is None:
        return absent("main_job")
    rows = [
        [r["model"], r["description"], num(r.get("AP")), num(r.get("AP50")), f"`{r['config']}`"]
        for r in _runs(rec)
    ]
    return (
        table(["model", "what", "AP", "AP50", "config"], rows)
        + "\n\nOne seed on one machine: "
        + source_line(rec, "main_job")
    )


def model_zoo_shapes(records: Records) -> str:
    """MODEL_ZOO: the main job's models with their cost (the cost columns come from their own record)."""
    rec, cost = records.get("main_job"), records.get("main_job_cost")
    if rec is None:
        return absent("main_job")
    by_model = {r["model"]: r for r in (cost or {}).get("rows", [])}
    rows = []
    for r in _runs(rec):
        c = by_model.get(r["model"], {})
        rows.append(
            [
                f"`{r['config']}`",
                num(r.get("AP")),
                num(r.get("AP50")),
                num(r.get("APs")),
                num(c.get("params_M"), 3),
                num(c.get("gflops"), 3),
                num(c.get("latency_ms")),
                num(c.get("eager_latency_ms")),
                f"`{c.get('checkpoint') or r['checkpoint']}`",
            ]
        )
    header = ["config", "AP", "AP50", "APs", "params (M)", "GFLOPs", "CPU deployed (ms)", "CPU eager (ms)"]
    text = table(header + ["checkpoint"], rows)
    src = rec.get("source", {})
    text += "\n\nAccuracy: " + source_line(rec, "main_job")
    if src.get("chain_minutes") is not None:
        text += f" The five stages took {num(src['chain_minutes'])} min there."
    if cost is not None:
        c0 = cost["rows"][0] if cost.get("rows") else {}
        size = "x".join(map(str, c0.get("test_size", []))) or "?"
        text += (
            f"\n\nCost: one {size} px image, {c0.get('threads', '?')} CPU threads, trained weights, median of "
            f"repeated runs; deployed = `quant_mimic.deploy` ({c0.get('backend', '?')}), eager = detectron2's "
            "`GeneralizedRCNN`; GFLOPs by fvcore (one multiply-add = one flop). "
            + source_line(cost, "main_job_cost")
        )
        note = cost.get("source", {}).get("note", "")
        if note:
            text += f" {note[0].upper()}{note[1:]}."
    return text


def model_zoo_study(records: Records) -> str:
    """MODEL_ZOO: the study's converged models: mean AP over seeds, cost, GPU latency where measured."""
    rec = records.get("study_fpn")
    if rec is None:
        return absent("study_fpn")
    cost = {r["config"]: r for r in (records.get("main_job_cost") or {}).get("rows", [])}
    gpu = (records.get("benchmark_h200") or {}).get("infer", {}).get("shapes", {}).get("600", {})
    configs = {
        "scratch": "shapes/student_R18_16_FPN_scratch.yaml",
        "mimic": "shapes/mimic_R18_16_FPN.yaml",
        "qm": "qm_R_tiny_FPN.yaml",
    }
    rows = []
    for name, t in rec.get("teachers", {}).items():
        config = f"shapes/{name}.yaml"
        c = cost.get(config, {})
        ms = gpu.get("teacher", {}).get("cuda_graphs", {}).get("latency_ms", {}).get("total")
        rows.append(
            [f"`{config}`", "1", num(t.get("AP")), num(c.get("params_M"), 3), num(c.get("gflops"), 3),
             num(ms) if name == "teacher_R18_2_FPN" else "-", f"`output/study/teachers/{name}/model_final.pth`"]
        )  # fmt: skip
    for name, config in configs.items():
        arm = rec["arms"].get(name)
        if arm is None:
            continue
        c = cost.get(config, {})
        ms = gpu.get("student", {}).get("cuda_graphs", {}).get("latency_ms", {}).get("total")
        ap = f"{num(arm['mean'])} ± {num(arm['std'])}"
        final = "model_final.pth" if name == "scratch" else "student_final.pth"
        rows.append(
            [f"`{config}`", str(len(arm["runs"])), ap, num(c.get("params_M"), 3), num(c.get("gflops"), 3),
             num(ms) if name == "scratch" else "-", f"`output/study/{name}_seed<N>/{final}`"]
        )  # fmt: skip
    sched = rec.get("schedule", {})
    header = [
        "config",
        "seeds",
        "AP (mean ± std)",
        "params (M)",
        "GFLOPs",
        "GPU ms (600 px, CUDA graph)",
        "checkpoint",
    ]
    return (
        table(header, rows)
        + f"\n\nStudents: {sched.get('max_iter', '?')} iterations (lr x0.1 at {sched.get('lr_step', '?')}); "
        + source_line(rec, "study_fpn")
        + " GPU: the study's teacher and its seed-0 scratch student (at 3000 iterations), "
        + source_line(records.get("benchmark_h200") or {}, "benchmark_h200", command=False)
    )


def model_zoo_setting(setting_name: str) -> Callable[[Records], str]:
    """MODEL_ZOO: one of the paper's settings: the record of its main job (the pipeline's results.json,
    as ``main_job_<setting>.json``), else its configs and the paper's numbers, "not yet measured"."""

    def render(records: Records) -> str:
        chain = CHAINS[setting_name]
        name = f"main_job_{setting_name}"
        rec = records.get(name)
        labels = [m.label for m in chain.metrics] if rec is not None else list(chain.paper_metrics)
        paper = list(chain.paper_metrics)
        header = ["config"] + labels + [f"paper {k}" for k in paper] + ["checkpoint"]
        rows = []
        if rec is not None:
            for r in _runs(rec):
                cells = [num(r.get(k)) for k in labels] + [num(r.get("paper", {}).get(k)) for k in paper]
                rows.append([f"`{r['config']}`", *cells, f"`{r['checkpoint']}`"])
            return table(header, rows) + "\n\n" + source_line(rec, name)
        for spec in chain.stages():
            cells = [NOT_MEASURED for _ in labels] + [num(spec.paper.get(k)) for k in paper]
            rows.append([f"`{spec.config}`", *cells, f"`output/{setting_name}/{spec.name}[_seed<N>]/`"])
        command = f'make main ARGS="--setting {setting_name} --data-root datasets"'
        return (
            table(header, rows)
            + f"\n\nCommand: `{command}`. Paper: {chain.paper_source}. No record yet "
            + f"(`{RECORDS_LINK}/{name}.json`: the run's `output/{setting_name}/results.json`)."
        )

    return render


# ---- the study


def study_finding(name: str, qm: str = "qm", split: str = "val") -> Callable[[Records], str]:
    """README: one line, a study's main paired differences (QM arm ``qm``) with their CIs on ``split``."""

    def render(records: Records) -> str:
        rec = records.get(name)
        if rec is None:
            return absent(name)
        sched = rec.get("schedule", {})
        on = rec.get("test", {}) if split == "test" else rec
        pairs = on.get("pairs", {})
        seeds = len(pairs.get(f"{qm}-mimic", {}).get("seeds", []))

        def pair(pair_name: str) -> str:
            p = pairs.get(pair_name, {})
            ci = p.get("ci95")
            return f"{signed(p.get('mean'), 2)} AP, 95% CI [{num(ci[0], 2)}, {num(ci[1], 2)}]" if ci else "-"

        return (
            f"{seeds} seeds, {sched.get('max_iter', '?')} iterations per student, AP on {split}: "
            f"QM - mimic **{pair(f'{qm}-mimic')}**; mimic - scratch **{pair('mimic-scratch')}**."
        )

    return render


def study(name: str, split: str = "val") -> Callable[[Records], str]:
    """STUDY: a study.json's arms, paired differences, ablations and matching ratios; ``split`` "test":
    the final models on the test split (the record's ``test``, written by ``study --test``)."""

    def render(records: Records) -> str:
        rec = records.get(name)
        if rec is None:
            return absent(name)
        sched = rec.get("schedule", {})
        out = [
            f"{sched.get('max_iter', '?')} iterations per student, lr x0.1 at {sched.get('lr_step', '?')}, "
            f"evaluated every {sched.get('eval_period', '?')}; AP on {split}; " + source_line(rec, name)
        ]
        if split == "test":
            if not rec.get("test"):
                return out[0] + "\n\nNot evaluated on test yet (`study --test`)."
            rec = {**rec["test"], "teachers": None}
        teachers = rec.get("teachers")
        if teachers:
            out.append(
                "Teachers: " + ", ".join(f"`{t}` {num(v.get('AP'))} AP" for t, v in teachers.items()) + "."
            )
        rows = []
        for arm_name, arm in rec.get("arms", {}).items():
            runs = arm.get("runs", {})
            per_seed = ", ".join(f"{s}: {num(r['AP'])}" for s, r in runs.items()) or "-"
            flat = f"{sum(bool(r.get('flat')) for r in runs.values())}/{len(runs)}" if runs else "-"
            rows.append([arm_name, arm.get("description", ""), len(runs), per_seed, num(arm.get("mean")),
                         num(arm.get("std")), flat])  # fmt: skip
        out.append(table(["arm", "what", "seeds", "AP per seed", "mean", "std", "flat at the end"], rows))
        rows = []
        for pair_name, p in rec.get("pairs", {}).items():
            ci = p.get("ci95")
            diffs = p.get("differences")
            rows.append([pair_name, len(p.get("seeds", [])), ", ".join(signed(d) for d in diffs) if diffs else "-",
                         signed(p.get("mean"), 2), f"[{num(ci[0], 2)}, {num(ci[1], 2)}]" if ci else "-"])  # fmt: skip
        if rows:
            header = ["paired difference (same seed)", "seeds", "per seed", "mean", "95% CI (t)"]
            out.append(table(header, rows))
        rows = []
        for abl, a in rec.get("ablations", {}).items():
            theirs = " / ".join(signed(d) for d in a.get("paper_differences", [])) or "not in the paper"
            rows.append([abl, a.get("reference", ""), ", ".join(map(str, a.get("seeds", []))),
                         ", ".join(signed(d) for d in a.get("differences", [])), signed(a.get("mean")), theirs])  # fmt: skip
        if rows:
            header = [
                "ablation",
                "against",
                "seeds",
                "ours: difference per seed",
                "mean",
                "paper: difference",
            ]
            out.append(table(header, rows))
        ratios = rec.get("matching_ratio_mean")
        if ratios:
            out.append(
                table(
                    ["arm", "mean matching ratio (paper Fig. 5)"], [[k, num(v, 2)] for k, v in ratios.items()]
                )
            )
        return "\n\n".join(out)

    return render


def study_convergence(records: Records) -> str:
    """STUDY: QM - mimic at each schedule length the study was extended to."""
    rec = records.get("study_fpn")
    by_iter = (rec or {}).get("qm_minus_mimic_by_max_iter")
    if not by_iter:
        return absent("study_fpn")
    rows = [[k, signed(v["mean"]), f"[{num(v['ci95'][0])}, {num(v['ci95'][1])}]"] for k, v in by_iter.items()]
    return (
        table(["iterations", "QM - mimic (AP)", "95% CI"], rows)
        + "\n\n"
        + source_line(rec, "study_fpn", command=False)
    )


# ---- benchmarks


def bench_train(train: dict) -> list[str]:
    ratios = train.get("ratios", {})
    return [
        num(train["scratch"]["median_s"], 3),
        num(train["teacher_forward"]["median_s"], 3),
        num(train["qm"]["median_s"], 3),
        num(ratios.get("qm_over_scratch_plus_1.3_teacher"), 2),
        num(train["qm"].get("peak_mb"), 0),
        num(train["scratch"].get("peak_mb"), 0),
    ]


TRAIN_HEADER = ["scratch step (s)", "teacher fwd (s)", "QM step (s)", "QM / (scratch + 1.3 teacher)",
                "QM peak MB", "scratch peak MB"]  # fmt: skip


def bench_infer(infer: dict) -> str:
    """One table per pair and size (ms per batch, each part), then the pair's ratios."""
    out = []
    for pair_name, pair in infer.items():
        weights = pair.get("weights", {})
        for size, row in pair.items():
            if size in ("configs", "weights"):
                continue
            runs = [
                (model, kind, m) for model in ("teacher", "student") for kind, m in row.get(model, {}).items()
            ]
            # the parts as the record names them (quant_mimic.timing.PARTS when it was measured)
            parts = [p for p in runs[0][2]["latency_ms"] if p != "total"] if runs else []
            rows = []
            for model, kind, m in runs:
                ms = m["latency_ms"]
                rows.append([model, kind, num(m.get("gflops"), 3), num(ms["total"]),
                             *(num(ms.get(p)) for p in parts), m.get("detections", "-")])  # fmt: skip
            title = f"**{pair_name}, {size} px** (teacher: {weights.get('teacher', '?')}; student: {weights.get('student', '?')})"
            header = ["model", "run", "GFLOPs", "total ms", *parts, "dets"]
            out.append(title + "\n\n" + table(header, rows))
            r = row.get("ratios", {})
            best = r.get("best_deployed", {})
            lines = [
                ["GFLOPs teacher / student", num(r.get("gflops_teacher/student"), 2)],
                ["eager teacher / eager student", num(r.get("eager_teacher/eager_student"), 2)],
                [
                    f"deployed teacher ({best.get('teacher')}) / deployed student ({best.get('student')})",
                    num(r.get("deployed_teacher/deployed_student"), 2),
                ],  # fmt: skip
                ["eager student / deployed student", num(r.get("eager_student/deployed_student"), 2)],
                ["student time outside backbone+FPN", percent(r.get("student_share_outside_backbone"))],
            ]
            if "student_gflops_share_outside_backbone" in r:
                lines.append(
                    [
                        "student GFLOPs outside backbone+FPN",
                        percent(r["student_gflops_share_outside_backbone"]),
                    ]
                )
            for key, label in (("onnxruntime/onnxruntime_graph", "networks one by one / whole graph"),
                               ("torchscript/onnxruntime", "TorchScript / ONNX Runtime")):  # fmt: skip
                for model in ("student", "teacher"):
                    if f"{model}_{key}" in r:
                        lines.append([f"{label} ({model})", num(r[f"{model}_{key}"], 2)])
            for key, v in r.items():
                if key.startswith("images_per_s_"):
                    lines.append([f"{key[len('images_per_s_') :]} images/s, teacher / student",
                                  f"{num(v['teacher'], 0)} / {num(v['student'], 0)}"])  # fmt: skip
            alone = row.get("backbone_alone_ms")
            if alone:
                lines.append(["backbone+FPN network alone, ms (teacher / student)",
                              f"{num(alone.get('teacher'))} / {num(alone.get('student'))}"])  # fmt: skip
            out.append(table(["ratio", "value"], lines))
    return "\n\n".join(out)


def benchmark(name: str) -> Callable[[Records], str]:
    """BENCHMARKS: a benchmark --json record (training part if any, inference tables, deployed AP)."""

    def render(records: Records) -> str:
        rec = records.get(name)
        if rec is None:
            return absent(name)
        out = [source_line(rec, name)]
        if "train" in rec:
            out.append("Training step, batch 8:\n\n" + table(TRAIN_HEADER, [bench_train(rec["train"])]))
        if "qm_training" in rec:
            q = rec["qm_training"]
            out.append(
                f"A real QM training run (`{q['config']}`, {q['iterations']} iterations, {q['num_workers']} data "
                f"workers): {num(q['median_s_per_iter'], 3)} s per iteration, data time {num(q['data_time_s'], 4)} s."
            )
        if "infer" in rec:
            out.append(bench_infer(rec["infer"]))
        if "deployed_ap" in rec:
            rows = [[k, num(v.get("AP"), 2), num(v.get("AP50"), 2)] for k, v in rec["deployed_ap"].items()]
            out.append(
                "COCO AP on `quantmimic_shapes_val`, the same student:\n\n"
                + table(["run", "AP", "AP50"], rows)
            )
        return "\n\n".join(out)

    return render


def benchmark_cpu_train(records: Records) -> str:
    rec = records.get("benchmark_cpu_train")
    if rec is None:
        return absent("benchmark_cpu_train")
    rows = [
        [i + 1, r["train"]["qm"].get("rounds", "?"), *bench_train(r["train"])]
        for i, r in enumerate(rec["runs"])
    ]
    cmds = sorted({r.get("source", {}).get("command", "") for r in rec["runs"]} - {""})
    return (
        table(["run", "rounds", *TRAIN_HEADER], rows)
        + "\n\nCommands: "
        + "; ".join(f"`{c}`" for c in cmds)
        + ". "
        + source_line(rec, "benchmark_cpu_train", command=False)
    )


def benchmark_cpu_spread(records: Records) -> str:
    rec = records.get("benchmark_cpu_spread")
    if rec is None:
        return absent("benchmark_cpu_spread")
    rows = [[r["date"], f"{r['size']} px", num(r.get("eager_student/deployed_student"), 2),
             num(r.get("deployed_teacher/deployed_student"), 2), percent(r.get("student_share_outside_backbone"))]
            for r in rec["runs"]]  # fmt: skip
    header = [
        "date",
        "size",
        "eager student / deployed student",
        "deployed teacher / student",
        "student outside backbone",
    ]
    return table(header, rows) + "\n\n" + source_line(rec, "benchmark_cpu_spread")


def settings_sweep(records: Records) -> str:
    """BENCHMARKS: AP against deployed latency over the test-time settings, for every swept model."""
    names = [n for n in ("settings_sweep_main_job", "settings_sweep_study") if records.get(n) is not None]
    if not names:
        return absent("settings_sweep_main_job")
    sweeps = {}
    for n in names:
        rec = records.get(n)
        rec = rec if isinstance(rec, dict) else {"rows": rec}  # settings_sweep's list of rows
        sweeps[n] = {**rec, "rows": rec.get("rows") or rec.get("sweep", [])}  # or evaluate_deployed's record
    order: list[tuple] = []
    cells: dict[tuple, list[str]] = {}
    for i, n in enumerate(names):
        for row in sweeps[n]["rows"]:
            key = tuple(row["setting"][k] for k in SWEEP_KEYS)
            if key not in cells:
                order.append(key)
                cells[key] = ["-"] * (3 * len(names))
            lat = row.get("latency_ms", {})
            cells[key][3 * i : 3 * i + 3] = [num(row.get("AP")), num(lat.get("192")), num(lat.get("600"))]
    header = ["pre-NMS top-k / level", "post-NMS top-k", "candidates", "detections / image"]
    for n in names:
        label = n[len("settings_sweep_") :].replace("_", " ")
        header += [f"{label}: AP", "192 px ms", "600 px ms"]
    rows = [[*key, *cells[key]] for key in order]
    notes = "\n".join(f"- {n[len('settings_sweep_') :]}: " + source_line(sweeps[n], n) for n in names)
    return table(header, rows) + "\n\n" + notes


def negative_results(records: Records) -> str:
    rec = records.get("negative_results")
    if rec is None:
        return absent("negative_results")
    rows = [[r["what"], r["measure"], r["tried"], r["kept"], r["trials"]] for r in rec["rows"]]
    return (
        table(["what", "measure", "alternative", "the code's way", "how measured"], rows)
        + "\n\n"
        + source_line(rec, "negative_results", command=False)
    )


def mutation(records: Records) -> str:
    rec = records.get("mutation")
    if rec is None:
        return absent("mutation")
    rows = [[f"`{f}`", f"{k} / {n}"] for f, (k, n) in rec["files"].items()]
    score = rec["killed"] / (rec["killed"] + rec["survived"])
    rows.append(
        ["**total**", f"**{rec['killed']} / {rec['killed'] + rec['survived']} ({100 * score:.1f}%)**"]
    )
    return (
        table(["mutated file", "killed / (killed + survived)"], rows)
        + f"\n\n{rec['mutants']} mutants, {rec['equivalent']} of them equivalent (left out). "
        + source_line(rec, "mutation")
    )


TABLES: dict[str, Callable[[Records], str]] = {
    "main_job": main_job,
    "study_finding": study_finding("study_fpn"),
    "study_finding_single": study_finding("study_single_2500", qm="qm_k16", split="test"),
    "model_zoo_shapes": model_zoo_shapes,
    "model_zoo_study": model_zoo_study,
    "model_zoo_voc": model_zoo_setting("voc"),
    "model_zoo_voc_single": model_zoo_setting("voc_single"),
    "model_zoo_wider_face": model_zoo_setting("wider_face"),
    "study_fpn": study("study_fpn"),
    "study_fpn_convergence": study_convergence,
    "study_single": study("study_single"),
    "study_single_2500": study("study_single_2500"),
    "study_single_2500_test": study("study_single_2500", split="test"),
    "study_fpn_post_relu": study("study_fpn_post_relu"),
    "benchmark_cpu": benchmark("benchmark_cpu"),
    "benchmark_cpu_single": benchmark("benchmark_cpu_single"),
    "benchmark_cpu_train": benchmark_cpu_train,
    "benchmark_cpu_spread": benchmark_cpu_spread,
    "benchmark_h200": benchmark("benchmark_h200"),
    "benchmark_h200_previous": benchmark("benchmark_h200_previous"),
    "settings_sweep": settings_sweep,
    "negative_results": negative_results,
    "mutation": mutation,
}


def render(text: str, records: Records, page: str = "README.md") -> str:
    """``text`` with every marked table regenerated (``page``: its path from the repository root, for
    the links to the records)."""
    _LINK_BASE[""] = "../" * page.count("/")

    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise KeyError(f"{page}: unknown table '{name}' (known: {', '.join(TABLES)})")
        return f"{match.group(1)}{TABLES[name](records)}\n{match.group(4)}"

    return MARKER.sub(replace, text)


def stale_pages(root: Path = ROOT, records: Records | None = None) -> list[str]:
    """The pages whose tables differ from what their records give."""
    records = records or Records()
    stale = []
    for page in PAGES:
        path = root / page
        if path.is_file():
            text = path.read_text()
            if render(text, records, page) != text:
                stale.append(page)
    return stale


def main(argv: list[str] | None = None) -> None:
    from .cli import make_parser, run

    parser = make_parser("docs", __doc__)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page is stale")
    parser.add_argument("--records", type=Path, default=RECORDS, metavar="DIR", help="the records folder")
    parser.add_argument("--root", type=Path, default=ROOT, metavar="DIR", help="the repository root")
    run("docs", parser, rewrite_pages, argv)


def rewrite_pages(args) -> None:
    """Rewrite the stale pages under ``args.root`` from ``args.records`` (``args.check``: only say which)."""
    records = Records(args.records)
    stale = stale_pages(args.root, records)
    if args.check:
        for page in stale:
            print(f"docs: {page} differs from its records: run `make docs`", file=sys.stderr)
        sys.exit(1 if stale else 0)
    for page in stale:
        path = args.root / page
        path.write_text(render(path.read_text(), records, page))
        print(f"docs: rewrote the tables of {page}")
    if not stale:
        print("docs: every page matches its records")


if __name__ == "__main__":
    main()
