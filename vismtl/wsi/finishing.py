"""Finishing chunks in worker processes: decisions, post-processing and instances off the GIL.

A chunk's finishing (watershed and components of every instance task, the objects' outlines,
ownership and measurements, per-object JSON) is mostly Python and numpy holding the GIL for
~0.7 s per 1024 x 1024 chunk on one core. In threads of the process that runs the model it
cannot use more than about one core, and on a GPU it starves the model's thread, which needs
the GIL to launch every kernel. :class:`ChunkFinisher` runs it either inline (the calling
writer thread; the default on the CPU, where every core is already busy) or in a pool of
spawned worker processes that scales with the machine's cores.

The chunk's maps (:class:`~vismtl.wsi.stitch.ChunkMaps`: the instance tasks' pixel cues, not
their probabilities) travel through a shared-memory block (a single copy, no pickling of the
arrays; integer maps such as type decisions narrowed to the smallest dtype that holds them),
and the worker finishes the chunk on views of that block. Blocks are reused from chunk to
chunk, and each worker keeps the blocks it has seen mapped
(:class:`~vismtl.wsi.workers.SharedBlocks`). Given the chunk's files, the worker writes its
rasters and part files itself and only the tallies come back; otherwise the rasters and the
part files' text come back pickled (a few MB).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import torch

from vismtl.tasks import Task
from vismtl.wsi.outputs import ChunkFiles, write_chunk_files
from vismtl.wsi.stitch import ChunkJob, ChunkMaps, finish_maps
from vismtl.wsi.workers import SharedBlocks, SpawnedPool, mapped_block, release_block, watch_parent

Spec = list[tuple[tuple[str, ...], str, tuple[int, ...], int]]  # (key, dtype, shape, byte offset) per map

_WORKER_TASKS: dict[str, Task] = {}  # set once per worker process by _start_worker


class ChunkFinisher:
    """Finishes chunks inline (``processes == 0``) or in ``processes`` spawned workers.

    Calls block until the chunk is finished (the caller is a writer thread), so as many
    chunks are finished at once as there are writer threads. Close it (or use it as a
    context manager) to stop the workers; a broken pool (a worker killed) fails the
    current chunk and is replaced on the next call.
    """

    def __init__(self, tasks: Mapping[str, Task], processes: int = 0) -> None:
        self.tasks, self.processes = dict(tasks), processes
        self._workers = SpawnedPool(processes, _start_worker, (self.tasks,))
        self.blocks = SharedBlocks()  # blocks of finished chunks, for the next ones

    def start(self) -> ProcessPoolExecutor | None:
        """Spawn the workers now (they import torch: seconds), so that they are ready by the first chunk."""
        return self._workers.start()

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Start the workers and block until every one of them has taken a task: the seconds it took."""
        return self._workers.wait_ready(timeout)

    def __call__(self, maps: ChunkMaps, job: ChunkJob, files: ChunkFiles | None = None) -> tuple[dict, dict, float]:
        """``(*finish_maps(maps, tasks, job), seconds it took)``, here or in a worker process.

        A worker given ``files`` writes the rasters and the instances' part files there itself
        and returns no rasters and parts without text: the arrays and the JSON then never pass
        through the engine's process (whose one GIL also launches the model's kernels)."""
        if not self.processes:
            return _timed_finish(maps.cpu(), self.tasks, job)
        block, spec = pack(maps, self.blocks.take)
        try:
            return self._in_process(f"finishing the chunk at {job.core}", _finish_packed, block.name, spec, job, files)
        finally:
            self.blocks.give_back(block)

    def call(self, doing: str, fn: Callable[..., Any], *args, here: bool = False) -> Any:
        """``fn(tasks, *args)``, in a finishing process when there are some (its Python then holds
        that process's GIL, not the one the model's thread launches kernels with), else (or
        ``here``) in this thread. In a process, ``fn`` must be a module's function and ``args``
        and the result picklable, and what it logs is logged here; ``doing`` says what it does,
        for the error if the process dies."""
        if here or not self.processes:
            return fn(self.tasks, *args)
        result, records = self._in_process(doing, _with_tasks, fn, *args)
        for record in records:
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)
        return result

    def _in_process(self, what: str, fn: Callable[..., Any], *args) -> Any:
        """``fn(*args)`` in a finishing process; one that dies fails the call with ``what`` it was doing."""
        pool = self.start()
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool as err:
            self._workers.discard(pool)  # a new pool on the next call
            raise BrokenProcessPool(
                f"a chunk-finishing process died while {what} (killed, or out of memory: lower "
                "wsi.finish_workers / --finish-workers)"
            ) from err

    def close(self) -> None:
        self._workers.close()
        self.blocks.close()

    def __enter__(self) -> ChunkFinisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pack(
    maps: ChunkMaps, block_of: Callable[[int], shared_memory.SharedMemory] | None = None
) -> tuple[shared_memory.SharedMemory, Spec]:
    """Copy ``maps`` (any device) into a shared-memory block, integer maps narrowed: a new block,
    or ``block_of(nbytes)``'s (at least ``nbytes`` large).

    Called on a GPU's side stream (the engine's writers use one), the copies wait for that
    stream only, not for the model's batches queued since."""
    tensors, spec, nbytes = _layout(maps)
    block = block_of(nbytes) if block_of else shared_memory.SharedMemory(create=True, size=max(nbytes, 1))
    try:
        for (_, dtype, shape, start), value in zip(spec, tensors):
            view = np.ndarray(shape, dtype, buffer=block.buf, offset=start)
            torch.from_numpy(view).copy_(value)  # straight from the device into the block
            del view
    except BaseException:
        release_block(block)
        raise
    return block, spec


def packed_nbytes(maps: ChunkMaps) -> int:
    """Bytes of the shared-memory block that :func:`pack` fills with ``maps``."""
    return _layout(maps)[2]


def _layout(maps: ChunkMaps) -> tuple[list[torch.Tensor], Spec, int]:
    """The maps as packed (integers narrowed, contiguous), where each goes, and the bytes in all."""
    flat = maps.flat()
    tensors = [_narrow(value).contiguous() for value in flat.values()]
    spec, offset = [], 0
    for key, value in zip(flat, tensors):
        spec.append((key, str(_np_dtype(value)), tuple(value.shape), offset))
        offset += _aligned(value.numel() * value.element_size())
    return tensors, spec, offset


def unpack(block: shared_memory.SharedMemory, spec: Spec) -> ChunkMaps:
    """The maps in ``block``, as views of it (no copy: drop them before closing the block)."""
    return ChunkMaps.from_flat(
        {
            key: torch.from_numpy(np.ndarray(shape, dtype, buffer=block.buf, offset=start))
            for key, dtype, shape, start in spec
        }
    )


def _narrow(value: torch.Tensor) -> torch.Tensor:
    """Integer maps in the smallest unsigned dtype that holds them (class ids: uint8); half
    precision as float32 (numpy has no bfloat16)."""
    if value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    if value.is_floating_point() or value.dtype == torch.bool or not value.numel():
        return value
    low, high = int(value.min()), int(value.max())
    if low >= 0 and high <= 255:
        return value.to(torch.uint8)
    if low >= -(2**31) and high < 2**31:
        return value.to(torch.int32)
    return value


def _np_dtype(value: torch.Tensor) -> np.dtype:
    return torch.empty((), dtype=value.dtype).numpy().dtype


def _aligned(nbytes: int, alignment: int = 64) -> int:
    return -(-nbytes // alignment) * alignment


def _start_worker(tasks: Mapping[str, Task]) -> None:
    """Per worker process: the tasks, one thread per library (the pool is the parallelism), and
    a watchdog: a worker whose engine was killed (SIGKILL, out of memory) exits instead of
    waiting for work forever."""
    import cv2

    _WORKER_TASKS.update(tasks)
    logging.getLogger("vismtl").setLevel(logging.DEBUG)  # every record goes to the engine, which filters
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    watch_parent()


def _with_tasks(fn: Callable[..., Any], *args) -> tuple[Any, list[logging.LogRecord]]:
    """``fn(tasks, *args)`` and the records it logged (messages formatted), for the engine to log."""
    records: list[logging.LogRecord] = []
    handler = _Collected(records)
    logger = logging.getLogger("vismtl")
    logger.addHandler(handler)
    try:
        return fn(_WORKER_TASKS, *args), records
    finally:
        logger.removeHandler(handler)


class _Collected(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args, record.exc_info, record.exc_text = record.getMessage(), None, None, None
        self.records.append(record)


def _finish_packed(name: str, spec: Spec, job: ChunkJob, files: ChunkFiles | None) -> tuple[dict, dict, float]:
    """Finish the chunk in shared-memory block ``name`` on views of it (a chunk's maps are
    not copied again); write its outputs to ``files`` if given."""
    rasters, parts, seconds = _finish_views(mapped_block(name), spec, job)
    if files is None:
        return rasters, parts, seconds
    write_chunk_files(files, rasters, parts)
    return {}, {task: replace(part, text=None, pieces=None) for task, part in parts.items()}, seconds


def _finish_views(block: shared_memory.SharedMemory, spec: Spec, job: ChunkJob) -> tuple[dict, dict, float]:
    rasters, parts, seconds = _timed_finish(unpack(block, spec), _WORKER_TASKS, job)
    # a raster may be a view of the block, which the next chunk overwrites: the core's own copy (small)
    return {name: np.array(value, copy=True) for name, value in rasters.items()}, parts, seconds


def _timed_finish(maps: ChunkMaps, tasks: Mapping[str, Task], job: ChunkJob) -> tuple[dict, dict, float]:
    started = time.perf_counter()
    rasters, parts = finish_maps(maps, tasks, job)
    return rasters, parts, time.perf_counter() - started
