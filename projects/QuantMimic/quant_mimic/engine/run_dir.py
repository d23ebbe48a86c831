"""What a training run's OUTPUT_DIR holds, read without changing it: the checkpoint ``--resume`` loads
(falling back to the newest readable one when ``last_checkpoint`` names a truncated file) and the folder
an ``--eval-only`` run writes to (never the training run's own files).

Nothing here deletes or rewrites a file.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import NamedTuple

import torch

from ..errors import QuantMimicInputError

LAST_CHECKPOINT = "last_checkpoint"
# What detectron2's training writes into OUTPUT_DIR and nothing else does: it marks a training run.
TRAINING_RUN_MARKERS = (LAST_CHECKPOINT, "metrics.json")
# An --eval-only run of a training run's folder writes to <OUTPUT_DIR>/eval/<weights file stem>/.
EVAL_SUBDIR = "eval"


def last_checkpoint_name(folder: str) -> str:
    """The checkpoint file ``<folder>/last_checkpoint`` names ("" if there is none or it cannot be read)."""
    try:
        with open(os.path.join(folder, LAST_CHECKPOINT)) as f:
            return f.read().strip()
    except OSError:
        return ""


def holds_training_run(folder: str) -> bool:
    """Whether ``folder`` holds a training run (``last_checkpoint`` or ``metrics.json``)."""
    return any(os.path.isfile(os.path.join(folder, m)) for m in TRAINING_RUN_MARKERS)


def eval_output_dir(output_dir: str, weights: str) -> str:
    """Where an ``--eval-only`` run writes its config.yaml, log.txt and inference/ files.

    ``output_dir`` itself, unless it holds a training run: then ``<output_dir>/eval/<stem of weights>``
    (e.g. ``eval/student_final`` for ``student_final.pth``), so an evaluation never replaces the
    training run's config.yaml, log or inference results, and evaluations of different checkpoints of
    one run stay apart.
    """
    if not output_dir or not holds_training_run(output_dir):
        return output_dir
    stem = os.path.splitext(os.path.basename(weights.rstrip("/")))[0] if weights else ""
    return os.path.join(output_dir, EVAL_SUBDIR, stem or "no_weights")


def error_summary(error: BaseException) -> str:
    """``Type: first sentence`` of ``error`` (PyTorch appends paragraphs of advice to its messages)."""
    text = " ".join(str(error).split()).split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _load(path: str, mmap: bool) -> object:
    """What detectron2's checkpointer would load from ``path`` (tensors memory-mapped when ``mmap``)."""
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e):
            raise
        # intact, but holds more than tensors (torch < 2.6 loads it so by default, as does the checkpointer)
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)


def read_checkpoint(path: str) -> tuple[object | None, str | None]:
    """``(content, None)`` if ``path`` loads as a checkpoint, else ``(None, why not)``: a phrase such as
    "is empty" or "cannot be read (RuntimeError: ... failed finding central directory)".

    A zip-format ``.pth`` (PyTorch's default) is checked member by member against its CRCs, then loaded
    with its tensors memory-mapped, so even a large checkpoint is checked without being read into
    memory; other files are loaded.
    """
    try:
        if os.path.getsize(path) == 0:
            return None, "is empty"
    except OSError as e:
        return None, f"cannot be opened ({e.strerror or e})"
    try:
        is_zip = not path.endswith(".pkl") and zipfile.is_zipfile(path)
        if is_zip:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return None, f"is corrupt (its part {bad} fails its checksum)"
        return _load(path, mmap=is_zip), None
    except Exception as e:  # noqa: BLE001  (whatever the loader raises, the file is unreadable)
        return None, f"is truncated or corrupt ({error_summary(e)})"


def _iteration(content: object) -> int | None:
    """The training iteration a detectron2 trainer checkpoint was saved at, or None if it is none."""
    if isinstance(content, dict) and isinstance(content.get("iteration"), int) and "model" in content:
        return content["iteration"]
    return None


class ResumePoint(NamedTuple):
    """The checkpoint ``--resume`` loads, and the warning to log when it is not ``last_checkpoint``'s."""

    path: str
    warning: str | None


def resume_point(output_dir: str) -> ResumePoint | None:
    """The checkpoint ``--resume`` should load from ``output_dir``; None if it holds no ``last_checkpoint``
    (detectron2 then starts from MODEL.WEIGHTS, as without --resume).

    If the file ``last_checkpoint`` names cannot be read (truncated by a crash or a full disk), this
    falls back to the readable trainer checkpoint (``model_*.pth`` holding an iteration) with the highest
    iteration, with a warning that names both files. Nothing is deleted or rewritten.

    Raises:
        QuantMimicInputError: the last checkpoint is unreadable and there is no readable earlier one.
    """
    marker = os.path.join(output_dir, LAST_CHECKPOINT)
    try:
        with open(marker) as f:
            name = f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise QuantMimicInputError(
            f"--resume: {marker} cannot be read ({e.strerror or e}): fix its permissions, or start a fresh run "
            "in a new OUTPUT_DIR without --resume."
        ) from None
    last = os.path.join(output_dir, name)
    if not name:
        problem = "names no file"
    else:
        content, problem = read_checkpoint(last)
        if problem is None:
            return ResumePoint(last, None)
    candidates = []
    for file in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, file)
        if file == name or not file.endswith(".pth") or not os.path.isfile(path):
            continue
        content, why = read_checkpoint(path)
        iteration = _iteration(content) if why is None else None
        if iteration is not None:
            candidates.append((iteration, os.path.getmtime(path), path))
    what = f"the last checkpoint {last} (named by {marker})" if name else f"{marker}, which"
    if not candidates:
        raise QuantMimicInputError(
            f"--resume: {what} {problem}, and {output_dir} holds no earlier readable checkpoint to resume "
            "from: start a fresh run in a new OUTPUT_DIR without --resume (nothing was deleted)."
        )
    iteration, _, path = max(candidates)
    return ResumePoint(
        path,
        f"--resume: {what} {problem}; resuming from {path} (iteration {iteration}), the newest readable "
        "earlier checkpoint (no file was deleted).",
    )
