"""What a training run writes, written so that a crash, Ctrl-C or a full disk never leaves a partial
file under a final name: checkpoints (and ``last_checkpoint``, renamed only after the checkpoint it
names) through :func:`quant_mimic.atomic.atomic_write`, and ``metrics.json`` lines appended whole.

A write that fails for want of space or permission raises a one-sentence QuantMimicInputError that
names the folder, its free space and the checkpoint ``--resume`` continues from.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from detectron2.utils.events import JSONWriter

from .. import atomic
from ..atomic import WRITE_ERRNOS, atomic_write, write_failure
from .run_dir import last_checkpoint_name


def resume_advice(output_dir: str) -> str:
    """What to do after a failed write in ``output_dir``: free space, then ``--resume`` from the
    checkpoint ``last_checkpoint`` names (every checkpoint there is complete)."""
    name = last_checkpoint_name(output_dir)
    if name:
        return (
            f"free some space, then run the same command with --resume, which continues from "
            f"{os.path.join(os.path.abspath(output_dir), name)}"
        )
    return "free some space, then run the same command again (no checkpoint was complete yet)"


class AtomicPathManager:
    """A detectron2/iopath PathManager whose ``open`` of a local file for writing ("w", "wb") is
    :func:`atomic_write`; everything else is the wrapped PathManager's."""

    def __init__(self, path_manager: Any, output_dir: str):
        self._path_manager = path_manager
        self._output_dir = output_dir

    def open(self, path: str, mode: str = "r", **kwargs: Any):
        if mode in ("w", "wb") and "://" not in str(path):
            return atomic_write(path, mode, resume_advice(self._output_dir))
        return self._path_manager.open(path, mode, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._path_manager, name)


def make_saves_atomic(checkpointer: Any) -> Any:
    """Make ``checkpointer`` (an fvcore Checkpointer, e.g. the trainer's DetectionCheckpointer) write each
    checkpoint to a temporary file renamed into place, then ``last_checkpoint`` the same way (fvcore's
    ``save`` writes both through ``self.path_manager.open``, in that order). Returns it."""
    if not isinstance(checkpointer.path_manager, AtomicPathManager):
        checkpointer.path_manager = AtomicPathManager(checkpointer.path_manager, checkpointer.save_dir)
    return checkpointer


class WholeLinesFile:
    """A text file open for appending where each ``flush`` appends what was written since the last one
    all at once, or, when the write fails, nothing (the file is cut back to where it was)."""

    def __init__(self, path: str, output_dir: str):
        self.name = path
        self._output_dir = output_dir
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pending: list[str] = []

    def write(self, text: str) -> int:
        self._pending.append(text)
        return len(text)

    def flush(self) -> None:
        if not self._pending:
            return
        data = "".join(self._pending).encode("utf-8")
        self._pending.clear()
        start = os.fstat(self._fd).st_size
        try:
            atomic.write_bytes(self._fd, data)  # looked up at each call: the one writer of bytes
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
                raise write_failure(self.name, e, resume_advice(self._output_dir)) from None
            raise

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = -1


def whole_line_metrics(writers: list, output_dir: str) -> list:
    """``writers`` (detectron2 EventWriters), with each JSONWriter's ``metrics.json`` appended in whole
    lines (:class:`WholeLinesFile`). Returns the same list."""
    for writer in writers:
        if isinstance(writer, JSONWriter) and not isinstance(writer._file_handle, WholeLinesFile):
            handle = writer._file_handle
            writer._file_handle = WholeLinesFile(handle.name, output_dir)
            handle.close()
    return writers
