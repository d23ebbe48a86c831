"""Training curves of the students from their metrics.json: losses and AP against iterations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .figure import plt, save_figure
from .runs import Run


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["iteration"], r[key]) for r in rows if key in r and r[key] == r[key]]  # drop NaN
    return [p[0] for p in points], [p[1] for p in points]


def training_curves(runs: Sequence[Run], path: Path, metric: tuple[str, str] = ("box AP", "bbox/AP")) -> Path:
    """Write a PNG with three panels: detection loss (total minus mimic), mimic loss, and the val
    ``metric`` ((label, metrics.json key), e.g. box AP or WIDER FACE easy AP) at each evaluation, one line
    per run. Returns ``path``."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for run in runs:
        rows = run.metrics()
        train = [r for r in rows if "total_loss" in r]
        detection = [
            {"iteration": r["iteration"], "detection": r["total_loss"] - r.get("loss_mimic", 0.0)}
            for r in train
        ]
        axes[0].plot(*_series(detection, "detection"), label=run.name)
        if any("loss_mimic" in r for r in train):
            axes[1].plot(*_series(train, "loss_mimic"), label=run.name)
        axes[2].plot(*_series(rows, metric[1]), marker="o", label=run.name)
    titles = ("detection losses (RPN + box head)", "mimic loss (lambda * L_m)", f"{metric[0]} on the val set")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return save_figure(fig, path)
