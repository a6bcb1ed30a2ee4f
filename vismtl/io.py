"""Crash-safe file writes (to a temporary file renamed into place), write errors that name their
file, and the lock of a folder a run writes to."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from vismtl.config import ConfigError

log = logging.getLogger("vismtl")

# A write that failed for want of space or quota: every later write to that disk fails too, so a
# run stops there (to be resumed) instead of failing each of its items in turn.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def out_of_space(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in NO_SPACE


def naming(err: OSError, path: str | Path) -> OSError | None:
    """``err`` naming ``path``, where it names no file (a failed write does not); None where it
    names one. The same errno, hence the same subclass (``OSError(errno.EACCES, ...)`` is a
    PermissionError)."""
    if err.filename is not None or err.errno is None:
        return None
    return OSError(err.errno, err.strerror, str(path))


def file_digest(path: str | Path, limit: int = 1 << 24) -> str:
    """sha256 of the first ``limit`` bytes and the size: identifies a checkpoint or a slide cheaply."""
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(limit))
    return f"{digest.hexdigest()[:16]}-{path.stat().st_size}"


def output_folder(path: str | Path, option: str) -> Path:
    """``path``, made if need be: a folder that cannot be made or written to is a
    :class:`~vismtl.config.ConfigError` naming ``option`` (``"--out-dir"``), said before a run
    starts rather than when its first file is written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        why = err.strerror or err
        raise ConfigError(f"cannot make the {option} folder {path} ({why}): choose another {option}") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"the {option} folder {path} is not writable: choose another {option}")
    return path


LOCK_FILE = ".lock"  # in a folder a run writes to: who holds it (hold_folder)
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # a file system without locks (NFS without lockd)


@dataclass(frozen=True)
class FolderLock:
    """A folder held by this process (:func:`hold_folder`) until :meth:`close`."""

    handle: IO  # the lock's file, open: closing any file of it in this process would let the lock go
    holder: str  # what it says of this run ("pid 4242 on node7, since 2026-11-28 09:14:03")

    def close(self) -> None:
        self.handle.close()


def hold_folder(folder: Path, option: str) -> FolderLock | None:
    """Take ``folder``'s lock for a run that writes there.

    Two runs writing to one folder at once (a command started twice, a scheduled run overlapping
    the last) interleave their writes, and each reports its outputs complete while objects are
    missing from them: the second fails at once instead (a ConfigError naming the run that holds
    the lock and ``option``). The lock is a POSIX record lock on ``folder/.lock`` (``lockf``): the
    system lets it go when the process ends however it ends (SIGKILL too), so none is left to
    clear by hand, and, unlike ``flock``, the process's forked children (data loading, slide
    reading) do not hold it, so a run resumed at once after a kill does not find its own lock.
    The process must not open and close the file meanwhile: that lets the lock go (read
    :attr:`FolderLock.holder` instead). The file stays (removing it would let two runs lock two
    different files of that name). None, with a warning, on a file system without locks; None
    where the system has no ``fcntl`` (Windows).
    """
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 -- held open for the run: FolderLock.close closes it
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in NO_LOCKS:
            handle.close()
            log.warning("cannot lock %s (%s): make sure no other run writes to this folder meanwhile", folder, err)
            return None
        if err.errno not in (errno.EACCES, errno.EAGAIN):  # held by another process: either, by the system
            handle.close()
            raise
        handle.seek(0)
        holder = handle.read().strip() or "a process that has not said which"
        handle.close()
        raise ConfigError(
            f"another run is writing to {folder} ({holder}): wait for it to end, or choose another {option}"
        ) from None
    holder = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
    handle.truncate(0)
    handle.write(holder + "\n")
    handle.flush()
    return FolderLock(handle, holder)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success flush, fsync and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; give them the usual mode
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if named := naming(err, path):
            raise named from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    with atomic_open(path, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image ``[H, W, 3]`` as PNG."""
    write_png_gray(path, rgb[..., ::-1])


def write_png_gray(path: str | Path, array: np.ndarray) -> None:
    """Write an array as stored (``[H, W]`` gray, or channels in OpenCV's BGR order) as PNG."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    with atomic_open(path, "wb") as handle:
        handle.write(encoded.tobytes())
