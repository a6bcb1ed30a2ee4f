"""What the engine's worker processes (reading, finishing) share: a watchdog, and waiting until they are up."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor


def watch_parent() -> None:
    """In a worker process: exit when the engine's process is gone (SIGKILL, out of memory)
    instead of waiting for work forever."""
    threading.Thread(target=_exit_with_parent, name="vismtl-watchdog", daemon=True).start()


def _exit_with_parent() -> None:
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(1)


def wait_until_up(pool: ProcessPoolExecutor, processes: int, timeout: float = 300.0) -> float:
    """Block until each of the pool's ``processes`` has taken a task: the seconds it took."""
    started = time.perf_counter()
    seen: set[int] = set()
    while len(seen) < processes and time.perf_counter() - started < timeout:
        seen.update(pool.map(_pid_after, [0.05] * processes))
    return time.perf_counter() - started


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)  # long enough that the other processes take the other tasks
    return os.getpid()
