"""The engine's worker processes (reading, finishing): a spawned pool kept from slide to slide, the
watchdog each process runs, and the shared-memory blocks through which arrays pass to and from them.

Arrays pass through shared memory rather than the pool's pipe: a pipe's message is copied about
three times on the engine's side (read in 64 KB pieces, joined, unpickled), holding the GIL that
its model's thread needs, where a block is written in place by one side and read by the other
(``benchmarks/wsi_transfer.py``)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import shared_memory


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


class SharedBlocks:
    """Shared-memory blocks reused from task to task, so their number stays that of the tasks in
    flight, and a worker that keeps them mapped (:func:`mapped_block`) finds their pages in place:
    copying into a fresh block faults every page in (16-22 ms for a 22 MB chunk here, against 4-5
    ms into a block used before: ``benchmarks/wsi_finishing.py``). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: list[shared_memory.SharedMemory] = []
        self._largest = 1  # bytes of the largest block so far
        self._closed = False

    def take(self, nbytes: int) -> shared_memory.SharedMemory:
        """A spare block of at least ``nbytes``, else a new one as large as the largest so far
        (tasks differ in size: a chunk at a slide's edge is smaller)."""
        with self._lock:
            fitting = next((block for block in self._spare if block.size >= nbytes), None)
            if fitting is not None:
                self._spare.remove(fitting)
                return fitting
            self._largest = max(self._largest, nbytes)
            dropped = self._spare.pop() if self._spare else None  # too small: replaced by the new one
        if dropped is not None:
            release_block(dropped)
        return shared_memory.SharedMemory(create=True, size=self._largest)

    def give_back(self, block: shared_memory.SharedMemory) -> None:
        """Return ``block`` for a later task (no process may still write it); after :meth:`close`,
        unlink it."""
        with self._lock:
            if not self._closed:
                self._spare.append(block)
                return
        release_block(block)

    def spare(self) -> int:
        with self._lock:
            return len(self._spare)

    def close(self) -> None:
        """Unlink the spare blocks, and from now on those given back."""
        with self._lock:
            spare, self._spare, self._closed = self._spare, [], True
        for block in spare:
            release_block(block)


def release_block(block: shared_memory.SharedMemory) -> None:
    block.close()
    block.unlink()


_MAPPED: OrderedDict[str, shared_memory.SharedMemory] = OrderedDict()  # a worker's blocks, latest used last
_MAPPED_KEPT = 32  # more than an engine has in use: the least recently used is one it gave up


def mapped_block(name: str) -> shared_memory.SharedMemory:
    """In a worker: block ``name``, mapped once per process (the engine reuses its blocks, and a
    block mapped before has its pages in place: mapping it afresh would fault each in again)."""
    block = _MAPPED.pop(name, None) or shared_memory.SharedMemory(name=name)
    _MAPPED[name] = block  # the latest used last
    while len(_MAPPED) > _MAPPED_KEPT:
        _, oldest = _MAPPED.popitem(last=False)
        try:
            oldest.close()
        except BufferError:  # a view outlived its call (an error's traceback): unmapped when collected
            pass
    return block
