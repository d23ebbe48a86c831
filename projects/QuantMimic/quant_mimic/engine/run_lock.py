"""One run per folder: an exclusive lock on ``<folder>/.lock`` held for the life of a run.

The lock is ``fcntl.flock`` on the file, so the kernel releases it whenever the process ends, even by
``kill -9``; the file itself stays (it holds the pid and start time of the last run that took it). A
second run on a locked folder is refused in one sentence naming the run that holds it.

    with run_lock(cfg.OUTPUT_DIR, "OUTPUT_DIR"):
        ...  # everything the run writes into cfg.OUTPUT_DIR
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from datetime import datetime
from typing import Iterator

from ..atomic import WRITE_ERRNOS, write_failure
from ..errors import QuantMimicInputError

LOCK_FILE = ".lock"


class FolderInUseError(QuantMimicInputError):
    """Another run holds the folder's lock."""


def _holder(fd: int) -> str:
    """``pid N on HOST, started at TIME`` from the lock file, as the holder wrote it (it writes right
    after taking the lock: a moment's wait covers a holder that has not written yet)."""
    for _ in range(20):
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        try:
            record = json.loads(text)
            return f"pid {record['pid']} on {record['host']}, started at {record['started']}"
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "a process that did not record its pid"


@contextlib.contextmanager
def run_lock(
    folder: str | os.PathLike, option: str = "OUTPUT_DIR", lock_file: str | os.PathLike | None = None
) -> Iterator[str]:
    """Hold the exclusive lock of ``folder`` for the block; yields the lock file's path.

    Args:
        folder: the folder a run writes into.
        option: how the user names that folder (``OUTPUT_DIR``, ``--output-dir``), for the error.
        lock_file: the lock file, by default ``<folder>/.lock`` (``folder`` is then created if needed);
            a folder that is replaced whole by a rename keeps its lock file beside it.

    Raises:
        FolderInUseError: another process holds the lock (the sentence names its pid and start time).
        QuantMimicInputError: the folder cannot be created or written (full disk, no permission).
    """
    folder = os.path.abspath(folder)
    path = os.path.abspath(lock_file) if lock_file is not None else os.path.join(folder, LOCK_FILE)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise write_failure(
                path, e, f"free some space or make it writable, or pass another {option}"
            ) from None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUseError(
                f"{folder} is in use by another run ({_holder(fd)}; lock file {path}): wait for it to "
                f"finish, or pass another {option}."
            ) from None
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
        os.ftruncate(fd, 0)
        os.pwrite(fd, (record + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
