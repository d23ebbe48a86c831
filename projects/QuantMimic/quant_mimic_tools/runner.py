"""The runner of the commands that train chains of models (the main job, ``pipeline``, and the ``study``):
each stage is an ordinary ``train_net.py`` run in its own folder, started as a subprocess with its log
kept beside the folder and detectron2's progress lines shown; a finished stage (its metrics.json holds
the final evaluation) is reused and an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .chains import SHAPES, Chain
from .results import finite_metric, read_final_metrics, table_cell

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAIN_NET = Path(__file__).resolve().parents[1] / "train_net.py"
_ERROR_LINE = re.compile(r"(Error\b|error:|Traceback)")  # not the "-Werror" of torch's build settings


@dataclass
class MainJob:
    """What a main job runs on: the chain, the folder its data sets are read from (None: the built-in
    data set's own), whether it is a smoke run, and the teacher's MODEL.WEIGHTS (None: its config's)."""

    chain: Chain = SHAPES
    data_root: Path | None = None
    smoke: bool = False
    teacher_weights: str | None = None

    def env(self) -> dict:
        """The environment of every stage: detectron2 reads the data sets from DETECTRON2_DATASETS."""
        env = dict(os.environ)
        if self.data_root is not None:
            env["DETECTRON2_DATASETS"] = str(self.data_root)
        return env

    def record(self) -> dict:
        root = None if self.data_root is None else str(self.data_root)
        return {"setting": self.chain.name, "data_root": root, "smoke": self.smoke,
                "teacher_weights": self.teacher_weights}  # fmt: skip


@dataclass
class Stage:
    """One train_net.py run of a chain: its folder's name, its config, a one-line description, its
    config overrides, and the paper's numbers for it."""

    name: str  # also the folder under --output-dir
    config: str  # relative to the project's configs/
    description: str
    opts: list[str] = field(default_factory=list)
    paper: dict[str, float] = field(default_factory=dict)  # the paper's numbers (Chain.paper_metrics)


def stage_command(stage: Stage, output: Path, extra_opts: list[str], args: Sequence[str] = ()) -> list[str]:
    """The train_net.py command of ``stage`` (with --resume when its folder holds a checkpoint); ``args``:
    more train_net.py options (the ``--dataset`` options of the user's data)."""
    out = output / stage.name
    cmd = [sys.executable, str(TRAIN_NET), "--config-file", str(CONFIGS / stage.config), *args]
    cmd += ["--resume"] if (out / "last_checkpoint").exists() else []
    return cmd + [*stage.opts, *extra_opts, "OUTPUT_DIR", str(out)]


def _say(text: str) -> None:
    """One whole line to stdout at once (stages side by side print from threads)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_stage(
    stage: Stage,
    output: Path,
    extra_opts: list[str],
    index: int,
    total: int,
    args: Sequence[str] = (),
    job: MainJob | None = None,
    tag: bool = False,
    until: int | None = None,
) -> dict:
    """Run ``stage`` (``extra_opts``: overrides after its own; ``args``: more train_net.py options; ``job``:
    the chain and its data root; ``tag``: name the stage on every progress line, for stages that run
    side by side; ``until``: a finished run whose last evaluation comes before this iteration is not
    done, and resumes: its schedule was extended)."""
    job = job or MainJob()
    out = output / stage.name
    done = read_final_metrics(out)
    if done is not None and (until is None or done.get("iteration", -1) + 1 >= until):
        _say(f"[{index}/{total}] {stage.name}: done already, reusing {out}")
        return done
    resume = (out / "last_checkpoint").exists()
    extending = f" (extending it to {until} iterations)" if done else ""
    resuming = " (resuming)" if resume and not done else ""
    _say(f"[{index}/{total}] {stage.name}: {stage.description}{resuming}{extending}")
    cmd = stage_command(stage, output, extra_opts, args)
    start = time.time()
    log = out.parent / f"{stage.name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=job.env()
        )
        try:
            for line in proc.stdout:  # keep the whole log, show detectron2's progress lines (with ETA)
                f.write(line)
                if "eta:" in line or "copypaste:" in line or _ERROR_LINE.search(line):
                    _say(f"    {stage.name + ': ' if tag else ''}{line.rstrip()[:160]}")
        except KeyboardInterrupt:
            raise StageInterrupted(stage.name, _stop(proc, f)) from None
    if proc.wait() != 0:
        raise SystemExit(f"Stage {stage.name} failed (exit {proc.returncode}); its log is {log}.")
    metrics = read_final_metrics(out)
    if metrics is None:
        raise SystemExit(f"Stage {stage.name} finished without a final evaluation; its log is {log}.")
    scores = ", ".join(
        f"{m.label} {table_cell(finite_metric(metrics.get(m.key)))}" for m in job.chain.metrics[:3]
    )
    _say(f"    {stage.name}: {scores} in {time.time() - start:.0f} s")
    return metrics


class StageInterrupted(KeyboardInterrupt):
    """Ctrl-C during the stage ``name``; ``line`` is what its train_net.py said when it stopped."""

    def __init__(self, name: str, line: str):
        super().__init__(name, line)
        self.name = name
        self.line = line

    def __str__(self) -> str:
        said = f" ({self.line})" if self.line else ""
        return (
            f"interrupted in stage {self.name}{said}; run the same command again to continue: finished stages "
            f"are reused and {self.name} resumes from its last checkpoint."
        )


def _stop(proc: subprocess.Popen, log) -> str:
    """After Ctrl-C: pass SIGINT on to the stage's train_net.py (a terminal sends it to both, a ``kill
    -INT`` of the main job to the main job alone), wait until it has saved and stopped, and return its
    "interrupted" line ("" if it printed none)."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    said = ""
    for line in proc.stdout:
        log.write(line)
        if "interrupted" in line:
            said = line.strip()
    proc.wait()
    return said
