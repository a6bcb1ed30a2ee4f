"""The engine's worker processes (reading, finishing): a spawned pool kept from slide to slide, and
the watchdog each process runs."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor


class SpawnedPool:
    """``processes`` spawned worker processes (none for 0), started by :meth:`start` or the first
    use and kept until :meth:`close`. A process that dies breaks the pool: :meth:`discard` drops
    it, and the next :meth:`start` spawns a new one.

    Spawned, not forked: the engine's threads (and CUDA) make forking its process unsafe, and a
    fork while another thread holds a lock (reading a slide) leaves the child waiting on it.
    """

    def __init__(self, processes: int, initializer: Callable[..., None], initargs: tuple = ()) -> None:
        self.processes = processes
        self._initializer, self._initargs = initializer, initargs
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # threads start and discard the pool concurrently

    def start(self) -> ProcessPoolExecutor | None:
        """The pool, its processes spawned now if need be, so that they are up by the first task."""
        with self._lock:
            if self.processes and self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=self._initializer,
                    initargs=self._initargs,
                )
                for _ in range(self.processes):  # each submit with no idle process spawns one
                    self._pool.submit(int)
            return self._pool

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Start the processes and block until each has taken a task: the seconds it took (for
        measurements of a warm engine: a batch pays this once, with its first slide)."""
        started = time.perf_counter()
        pool = self.start()
        seen: set[int] = set()
        while pool is not None and len(seen) < self.processes and time.perf_counter() - started < timeout:
            seen.update(pool.map(_pid_after, [0.05] * self.processes))
        return time.perf_counter() - started

    def discard(self, pool: ProcessPoolExecutor | None) -> None:
        """Shut ``pool`` down unless another thread already replaced it."""
        with self._lock:
            if pool is None or pool is not self._pool:
                return
            self._pool = None
        pool.shutdown(cancel_futures=True)

    def close(self) -> None:
        self.discard(self._pool)


def watch_parent() -> None:
    """In a worker process: exit when the engine's process is gone (SIGKILL, out of memory)
    instead of waiting for work forever."""
    threading.Thread(target=_exit_with_parent, name="vismtl-watchdog", daemon=True).start()


def _exit_with_parent() -> None:
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(1)


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)  # long enough that the other processes take the other tasks
    return os.getpid()
