"""Reading a slide's chunks of tiles: in the engine's reading thread, or in processes that outlive a slide.

A chunk's tiles are cut from one read of their bounding box (:func:`read_chunk`), so each of the
slide's JPEG tiles is decoded once per chunk instead of once per model tile.

:class:`ReadingPool` spawns its processes once per engine, beside the finishing processes; each
keeps the last slides it read open, and the engine asks for a slide's chunks in order, a few
ahead. A process writes a chunk's tiles into a shared-memory block of the engine's, which copies
them out once: through the pool's pipe they would cost the engine's process, whose GIL launches
the model's kernels, several copies under that lock (``benchmarks/wsi_transfer.py``).

PyTorch's DataLoader, used until 2026-11-27, forked new workers for every slide: a fork of
the engine's process (which on a GPU holds CUDA and gigabytes of mappings) per slide, and a fork
while another thread reads a slide can leave the child waiting forever on a lock that thread held.

This module imports only the reader and numpy: a spawned process pays for what it imports.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from vismtl.wsi.reader import Slide, SlideError
from vismtl.wsi.workers import SharedBlocks, SpawnedPool, mapped_block, watch_parent

_OPEN: OrderedDict[tuple[str, int, int], ChunkReader] = OrderedDict()  # a reading process's slides, latest last
_OPEN_KEPT = 2  # the slide being read and the one before it


def covering_box(corners: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """``(x, y, width, height)`` of the read that covers the tiles of side ``size`` at ``corners``
    (``[n, 2]`` (y, x) top-left corners on the output grid)."""
    y0, x0 = corners.min(axis=0)
    y1, x1 = corners.max(axis=0) + size
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def read_chunk(slide: Slide, corners: np.ndarray, size: int, scale: float, out: np.ndarray | None = None) -> np.ndarray:
    """The tiles of side ``size`` at ``corners`` on the output grid at ``scale`` output pixels per
    level-0 pixel: uint8 ``[n, size, size, 3]`` (into ``out`` if given), cut from one read of
    their :func:`covering_box`."""
    x0, y0, width, height = covering_box(corners, size)
    block = slide.read(x0, y0, width, height, scale)
    return np.stack([block[y - y0 : y - y0 + size, x - x0 : x - x0 + size] for y, x in corners], out=out)


class ChunkReader:
    """A slide's chunks of tiles (:func:`read_chunk`), the slide opened on first use.

    A damaged tile of the slide file (a JPEG tile that does not decode: "Bogus marker length")
    fails the read of every chunk that covers it. Such a chunk is read again model tile by model
    tile (the same pixels: reads agree where they overlap) with :meth:`Slide.read_or_glass`; those
    that still fail are left white, glass to the model, and reported, so that one damaged tile does
    not lose the slide. A slide that cannot be opened, and an error of the file system
    (``OSError``: a share gone away), fail the read as before: a rerun may succeed, and white tiles
    would hide that."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._slide: Slide | None = None

    def read(
        self, corners: np.ndarray, size: int, scale: float, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """The tiles at ``corners`` (into ``out`` if given) and the unreadable ones: ``(index,
        error)`` each (none normally)."""
        slide = self._handle()
        try:
            return read_chunk(slide, corners, size, scale, out), []
        except SlideError as err:
            slide.reopen_after(err)
            chunk_error = str(err)
        tiles = np.empty((len(corners), size, size, 3), np.uint8) if out is None else out
        unreadable = []
        for index, (y, x) in enumerate(corners.tolist()):
            tiles[index], errors, _ = slide.read_or_glass(x, y, size, size, scale, part=size)
            if errors:
                unreadable.append((index, str(errors[0])))
        if len(unreadable) == len(corners):  # nothing of it reads: the chunk's own error says it best
            unreadable = [(index, chunk_error) for index, _ in unreadable]
        return tiles, unreadable

    def _handle(self) -> Slide:
        if self._slide is None:
            self._slide = Slide.open(self.path)
        return self._slide

    def close(self) -> None:
        if self._slide is not None:
            self._slide.close()
            self._slide = None


class ReadingPool(SpawnedPool):
    """``processes`` spawned reading processes (:class:`~vismtl.wsi.workers.SpawnedPool`). A process
    that dies fails the slide being read, and a new pool takes over at the next slide."""

    def __init__(self, processes: int) -> None:
        super().__init__(processes, _start_reader)
        self.blocks = SharedBlocks()  # the chunks' tiles, from the processes; reused chunk after chunk

    def chunks(
        self,
        path: Path,
        scale: float,
        corners: Sequence[np.ndarray],
        size: int,
        ahead: int,
        take: Callable[[np.ndarray], Any] = np.array,
    ) -> Iterator[tuple[Any, list[tuple[int, str]]]]:
        """Each chunk's tiles and unreadable ones (:meth:`ChunkReader.read` of ``corners[k]``, in
        order), at most ``ahead`` chunks being read at once. The tiles are ``take(view)``, where
        ``view`` (uint8 ``[n, size, size, 3]``) is valid only during the call: ``take`` copies it
        out (default: into a numpy array). A chunk without tiles gives ``take`` an empty one."""
        pool = self.start()
        pending: deque[tuple[Future | None, Any, int]] = deque()
        submitted = 0
        try:
            for _ in range(len(corners)):
                while submitted < len(corners) and len(pending) < ahead:
                    pending.append(self._submit(pool, str(path), scale, corners[submitted], size))
                    submitted += 1
                future, block, count = pending.popleft()
                if block is None:
                    yield take(np.zeros((0, size, size, 3), np.uint8)), []
                    continue
                view = None
                try:
                    unreadable = future.result()
                    view = np.ndarray((count, size, size, 3), np.uint8, buffer=block.buf)
                    tiles = take(view)
                finally:
                    view = None  # a block can be closed only once no view of it is left (an error's traceback)
                    self.blocks.give_back(block)
                yield tiles, unreadable
        except BrokenProcessPool as err:
            self.discard(pool)
            raise RuntimeError(
                f"a reading process died while reading {path} (killed, or out of memory: lower --workers)"
            ) from err
        finally:
            for future, block, _ in pending:
                if block is not None:  # a block a process may still be writing goes back once it is done
                    future.cancel()
                    future.add_done_callback(lambda _, block=block: self.blocks.give_back(block))

    def _submit(
        self, pool: ProcessPoolExecutor, path: str, scale: float, corners: np.ndarray, size: int
    ) -> tuple[Future | None, Any, int]:
        """A read of the tiles at ``corners`` into a block: ``(future, block, tiles)``; none for no tiles."""
        count = len(corners)
        if not count:
            return None, None, 0
        block = self.blocks.take(count * size * size * 3)
        try:
            return pool.submit(_read, path, scale, corners, size, block.name), block, count
        except BaseException:
            self.blocks.give_back(block)
            raise

    def close(self) -> None:
        super().close()
        self.blocks.close()


def _start_reader() -> None:
    """Per reading process, at its start: this module (and the reader's libraries) imported, the watchdog."""
    watch_parent()


def _read(path: str, scale: float, corners: np.ndarray, size: int, block_name: str) -> list[tuple[int, str]]:
    """In a reading process: :meth:`ChunkReader.read` of the tiles at ``corners`` into the engine's
    shared-memory block ``block_name``; the unreadable tiles."""
    out = np.ndarray((len(corners), size, size, 3), np.uint8, buffer=mapped_block(block_name).buf)
    try:
        return reader_of(path).read(corners, size, scale, out)[1]
    finally:
        del out  # no view of the block outlives the call


def reader_of(path: str) -> ChunkReader:
    """In a reading process: its reader of ``path``, kept open for the next chunks (a file rewritten
    since is opened again)."""
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _OPEN:
        _OPEN[key] = ChunkReader(path)
        while len(_OPEN) > _OPEN_KEPT:
            _OPEN.popitem(last=False)[1].close()
    _OPEN.move_to_end(key)
    return _OPEN[key]
