"""AP against deployed CPU latency: every trained model one point (our teachers and students, torchvision's
peers), the spread over seeds as error bars.

The points come from the records (``projects/QuantMimic/docs/records/``): ``main_job.json`` (the main job's
teachers and students), ``study_fpn.json`` (teachers, and the scratch / mimic / QM students over seeds) and
``peers.json`` (``python -m quant_mimic_tools.peers``). Latency is one image, batch 1, the fastest
deployed way to run the model (ours: the deployed folder; the peers: the whole model in ONNX Runtime),
taken from ``peers.json``'s benchmark (the same run for every model) where it has one, else from
``main_job_cost.json`` for ours. Every student of ours is the same network, so they share one latency, as
the teachers do.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .figure import plt, save_figure

STUDY_ARMS = ("scratch", "mimic", "qm")  # the study's arms drawn (the others are the same network)
COST_ROWS = {"teacher": "teacher_R18_2_FPN", "student": "student_scratch_seed0"}  # main_job_cost rows
MARKERS = {"teacher": "s", "student": "o", "peer": "^"}
PEER_LABELS = {
    "ssdlite320_mobilenet_v3_large": "SSDlite320 MobileNetV3-L",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "Faster R-CNN MobileNetV3-L 320 FPN",
}


@dataclass
class Point:
    """One trained model: AP (mean over ``seeds``, ``std`` their sample standard deviation or None) and
    the ms of one deployed image."""

    label: str
    group: str
    role: str  # teacher, student or peer
    ap: float
    std: float | None
    seeds: int
    latency_ms: float | None


def _read(folder: Path, name: str) -> dict | None:
    path = Path(folder) / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _latency(folder: Path, peers: dict | None, size: str) -> tuple[dict[str, float], str]:
    """ms per model name ("teacher", "student", each peer) and where they come from."""
    same_run = ((peers or {}).get("latency") or {}).get(size, {}).get("models", {})
    latency = {name: m["deployed_ms"] for name, m in same_run.items()}
    where = "one benchmark run for every model"
    if "teacher" not in latency or "student" not in latency:
        rows = {r["model"]: r for r in (_read(folder, "main_job_cost") or {}).get("rows", [])}
        for role, model in COST_ROWS.items():
            if model in rows and str(rows[model].get("test_size", [size])[0]) == size:
                latency.setdefault(role, rows[model]["latency_ms"])
        where = "ours: main_job_cost.json" + ("; peers: their benchmark run" if same_run else "")
    return latency, where


def points(folder: Path, peers: dict | None = None, size: str = "192") -> tuple[list[Point], str]:
    """Every trained model with an AP and a latency at ``size`` px; and where the latencies come from.
    ``peers``: the peers' record (default ``<folder>/peers.json``)."""
    peers = peers if peers is not None else _read(folder, "peers")
    latency, where = _latency(folder, peers, size)
    out: list[Point] = []
    main = _read(folder, "main_job")
    if main is not None:
        over = {o["model"]: o for o in main.get("over_seeds", [])}
        for r in main.get("runs", []):
            role = "teacher" if r["model"].startswith("teacher") else "student"
            o = over.get(r["model"].rsplit("_seed", 1)[0], {})
            if o.get("seeds", 1) > 1:
                ap, std, seeds = o["AP_mean"], o.get("AP_std"), o["seeds"]
            else:
                ap, std, seeds = r.get("AP"), None, 1
            label = r["model"].rsplit("_seed", 1)[0].replace("teacher_R18_2_FPN", "teacher").replace("_", " ")
            out.append(Point(label, "main job", role, ap, std, seeds, latency.get(role)))
    study = _read(folder, "study_fpn")
    if study is not None:
        group = f"study ({study.get('schedule', {}).get('max_iter', '?')} iterations)"
        for name, t in study.get("teachers", {}).items():
            label = name.replace("teacher_R18_2_FPN", "teacher").replace("_", " ")
            out.append(Point(label, group, "teacher", t.get("AP"), None, 1, latency.get("teacher")))
        for arm in STUDY_ARMS:
            a = study.get("arms", {}).get(arm)
            if a and a.get("mean") is not None:
                out.append(
                    Point(f"student {arm}", group, "student", a["mean"], a.get("std"), len(a.get("runs", {})),
                          latency.get("student"))
                )  # fmt: skip
    for name, entry in (peers or {}).get("models", {}).items():
        if entry.get("mean") is None:
            continue
        sched = entry.get("schedule", {})
        group = f"torchvision peers ({sched.get('max_iter', '?')} iterations x {sched.get('batch', '?')})"
        out.append(
            Point(PEER_LABELS.get(name, name), group, "peer", entry["mean"], entry.get("std"), len(entry["runs"]),
                  latency.get(name))
        )  # fmt: skip
    kept = [p for p in out if p.ap is not None and p.latency_ms is not None and math.isfinite(p.ap)]
    return kept, where


def figure_size(peers: dict | None, size: str | None = None) -> str:
    """The image size the picture's latencies are of: ``size``, else 192 (the built-in test size) where
    the peers' benchmark has it, else the first size it has."""
    if size is not None:
        return size
    sizes = list((peers or {}).get("latency") or {})
    return "192" if "192" in sizes or not sizes else sizes[0]


def _label_heights(found: list[Point], gap: float) -> list[float]:
    """Heights of the points' labels: their AP, pushed apart by at least ``gap`` among points drawn at the
    same latency (our students share one)."""
    heights = [p.ap for p in found]
    by_x: dict[float, list[int]] = {}
    for i, p in enumerate(found):
        by_x.setdefault(round(p.latency_ms, 6), []).append(i)
    for indices in by_x.values():
        last = -math.inf
        for i in sorted(indices, key=lambda i: found[i].ap):
            heights[i] = max(found[i].ap, last + gap)
            last = heights[i]
    return heights


def accuracy_latency(folder: Path, path: Path, peers: dict | None = None, size: str | None = None) -> Path:
    """Write a PNG of AP (error bars: the std over seeds) against deployed CPU latency of one ``size`` px
    image (default :func:`figure_size`; log scale), one point per trained model, one colour per record.
    ``peers``: the peers' record (default ``<folder>/peers.json``). Returns ``path``."""
    from matplotlib.ticker import FuncFormatter

    peers = peers if peers is not None else _read(Path(folder), "peers")
    size = figure_size(peers, size)
    found, where = points(Path(folder), peers, size)
    threads = ((peers or {}).get("latency") or {}).get(size, {}).get("threads") or 2
    fig, ax = plt.subplots(figsize=(9, 5.5))
    groups = list(dict.fromkeys(p.group for p in found))
    colors = {g: f"C{i}" for i, g in enumerate(groups)}
    for g in groups:
        for role in MARKERS:
            chosen = [p for p in found if p.group == g and p.role == role]
            if not chosen:
                continue
            ax.errorbar(
                [p.latency_ms for p in chosen], [p.ap for p in chosen],
                yerr=[p.std or 0.0 for p in chosen], fmt=MARKERS[role], color=colors[g], capsize=4,
                markersize=7, label=g if role == "peer" else f"{g}: {role}s",
            )  # fmt: skip
    if found:
        span = max(p.ap for p in found) - min(p.ap for p in found)
        for p, height in zip(found, _label_heights(found, gap=max(span, 10) * 0.035)):
            seeds = f" ({p.seeds} seeds)" if p.seeds > 1 else ""
            ax.annotate(
                f"{p.label}{seeds}", (p.latency_ms, p.ap), xytext=(p.latency_ms * 1.06, height),
                color=colors[p.group], fontsize=7, va="center",
            )  # fmt: skip
        ax.set_xscale("log")
        low, high = min(p.latency_ms for p in found), max(p.latency_ms for p in found)
        ax.set_xlim(low / 1.25, high * 2.2)  # room for the labels on the right
        plain = FuncFormatter(lambda x, _: f"{x:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.legend(fontsize=7, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no record with both an AP and a latency", ha="center", transform=ax.transAxes)
    ax.set_xlabel(f"deployed CPU latency, ms (one {size} px image, batch 1, {threads} threads, log scale)")
    ax.set_ylabel("COCO box AP (val)")
    ax.set_title(f"AP against deployed latency (latency: {where})", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, Path(path))
