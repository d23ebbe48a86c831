"""Writes a user can trust: a file appears under its final name only once it is complete, and a write
that fails for want of space or permission ends as one sentence naming the folder, its free space and
what to do (a :class:`QuantMimicInputError`).

``atomic_write(path)`` writes a temporary file in the same folder, flushes and fsyncs it, then
``os.replace``s it onto ``path``; a failure at any point removes the temporary file and leaves whatever
``path`` held before. Every byte goes through :func:`write_bytes` (the one place a test makes the disk
full).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
from typing import IO, Iterator

from .errors import QuantMimicInputError

# A write that fails with one of these needs the user to act on the disk or the folder.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
WRITE_ERRNOS = NO_SPACE + NOT_WRITABLE
TEMPORARY_INFIX = ".tmp-"


def write_bytes(fd: int, data: bytes | memoryview) -> None:
    """All of ``data`` to the file descriptor ``fd`` (``os.write`` until done); raises OSError."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def human_size(size: int) -> str:
    """``size`` bytes as ``"512 B"``, ``"3.2 MB"``, ``"41.0 GB"``."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def free_space(path: str | os.PathLike) -> str:
    """The free space on the disk that holds ``path`` (or its nearest existing parent), e.g. ``"1.2 GB"``."""
    folder = os.path.abspath(path)
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return human_size(shutil.disk_usage(folder).free)
    except OSError:
        return "an unknown amount"


def find_write_error(error: BaseException | None) -> OSError | None:
    """The OSError with a no-space or no-permission errno in ``error`` or its causes (torch.save, for
    one, reports a failed write as a RuntimeError raised while handling it), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


class WriteFailure(QuantMimicInputError):
    """A write of ``path`` failed with ``error`` (a full disk, a folder that is not writable)."""

    def __init__(self, message: str, path: str, error: OSError):
        super().__init__(message)
        self.path = path
        self.error = error


def write_failure(path: str | os.PathLike, error: OSError, advice: str) -> WriteFailure:
    """The one-sentence error for a failed write of ``path`` (a file or a folder): what went wrong, the
    folder, its free space, and ``advice`` (what to do, e.g. "free some space and deploy again")."""
    path = os.path.abspath(path)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    if error.errno in NO_SPACE:
        problem = f"the disk of {folder} is full ({free_space(folder)} free)"
    else:
        problem = f"{folder} is not writable ({error.strerror or error}; {free_space(folder)} free)"
    return WriteFailure(f"Cannot write {path}: {problem}: {advice}.", path, error)


class _DiskFile(io.RawIOBase):
    """An unbuffered file open for writing whose bytes go through :func:`write_bytes`."""

    def __init__(self, path: str):
        super().__init__()
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        write_bytes(self.fd, data)
        return memoryview(data).nbytes

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", advice: str = "free some space and run again"
) -> Iterator[IO]:
    """Write ``path`` all or nothing: the block writes to a temporary file in the same folder (a file
    object opened with ``mode``, "wb" or "w"), which is flushed, fsynced and renamed onto ``path`` when the
    block ends without an exception. On any failure (an exception, Ctrl-C) the temporary file is removed
    and ``path`` keeps its old content.

    Raises:
        QuantMimicInputError: the disk is full or the folder is not writable (``advice`` says what to do).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = os.path.abspath(path)
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}{TEMPORARY_INFIX}{os.getpid()}")
    try:
        raw = _DiskFile(temporary)
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise write_failure(path, e, advice) from None
        raise
    f: IO = io.BufferedWriter(raw, buffer_size=1 << 20)
    if mode == "w":
        f = io.TextIOWrapper(f, encoding="utf-8")
    try:
        with f:
            yield f
            f.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            raw.close()
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        failed = find_write_error(e)
        if failed is not None:
            raise write_failure(path, failed, advice) from None
        raise
    fsync_folder(folder)


def write_text(path: str | os.PathLike, text: str, advice: str = "free some space and run again") -> None:
    """``text`` into ``path``, all or nothing (:func:`atomic_write`)."""
    with atomic_write(path, "w", advice) as f:
        f.write(text)
