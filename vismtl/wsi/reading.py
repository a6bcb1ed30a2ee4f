"""Reading a slide's chunks of tiles: in the engine's reading thread, or in processes that outlive a slide.

A chunk's tiles are cut from one read of their bounding box (:func:`read_chunk`), so each of the
slide's JPEG tiles is decoded once per chunk instead of once per model tile.

:class:`ReadingPool` spawns its processes once per engine, beside the finishing processes; each
keeps the last slides it read open, and the engine asks for a slide's chunks in order, a few
ahead. PyTorch's DataLoader, used until 2026-11-27, forked new workers for every slide: a fork of
the engine's process (which on a GPU holds CUDA and gigabytes of mappings) per slide, and a fork
while another thread reads a slide can leave the child waiting forever on a lock that thread held.

This module imports only the reader and numpy: a spawned process pays for what it imports.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from vismtl.wsi.reader import Slide, SlideError
from vismtl.wsi.workers import SpawnedPool, watch_parent

_OPEN: OrderedDict[tuple[str, int, int], ChunkReader] = OrderedDict()  # a reading process's slides, latest last
_OPEN_KEPT = 2  # the slide being read and the one before it


def covering_box(corners: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """``(x, y, width, height)`` of the read that covers the tiles of side ``size`` at ``corners``
    (``[n, 2]`` (y, x) top-left corners on the output grid)."""
    y0, x0 = corners.min(axis=0)
    y1, x1 = corners.max(axis=0) + size
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def read_chunk(slide: Slide, corners: np.ndarray, size: int, scale: float) -> np.ndarray:
    """The tiles of side ``size`` at ``corners`` on the output grid at ``scale`` output pixels per
    level-0 pixel: uint8 ``[n, size, size, 3]``, cut from one read of their :func:`covering_box`."""
    x0, y0, width, height = covering_box(corners, size)
    block = slide.read(x0, y0, width, height, scale)
    return np.stack([block[y - y0 : y - y0 + size, x - x0 : x - x0 + size] for y, x in corners])


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

    def read(self, corners: np.ndarray, size: int, scale: float) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """The tiles at ``corners`` and the unreadable ones: ``(index, error)`` each (none normally)."""
        slide = self._handle()
        try:
            return read_chunk(slide, corners, size, scale), []
        except SlideError as err:
            slide.reopen_after(err)
            chunk_error = str(err)
        tiles = np.empty((len(corners), size, size, 3), np.uint8)
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

    def chunks(
        self, path: Path, scale: float, corners: Sequence[np.ndarray], size: int, ahead: int
    ) -> Iterator[tuple[np.ndarray, list[tuple[int, str]]]]:
        """Each chunk's tiles and unreadable ones (:meth:`ChunkReader.read` of ``corners[k]``, in
        order), at most ``ahead`` chunks being read at once; a chunk without tiles gives
        ``[0, size, size, 3]`` at once."""
        pool = self.start()
        pending: deque = deque()
        submitted = 0
        try:
            for _ in range(len(corners)):
                while submitted < len(corners) and len(pending) < ahead:
                    empty = not len(corners[submitted])
                    pending.append(None if empty else pool.submit(_read, str(path), scale, corners[submitted], size))
                    submitted += 1
                future = pending.popleft()
                yield (np.zeros((0, size, size, 3), np.uint8), []) if future is None else future.result()
        except BrokenProcessPool as err:
            self.discard(pool)
            raise RuntimeError(
                f"a reading process died while reading {path} (killed, or out of memory: lower --workers)"
            ) from err
        finally:
            for future in pending:
                if future is not None:
                    future.cancel()


def _start_reader() -> None:
    """Per reading process, at its start: this module (and the reader's libraries) imported, the watchdog."""
    watch_parent()


def _read(path: str, scale: float, corners: np.ndarray, size: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """In a reading process: :meth:`ChunkReader.read` with this process's reader of ``path`` (a file
    rewritten since is opened again)."""
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _OPEN:
        _OPEN[key] = ChunkReader(path)
        while len(_OPEN) > _OPEN_KEPT:
            _OPEN.popitem(last=False)[1].close()
    _OPEN.move_to_end(key)
    return _OPEN[key].read(corners, size, scale)
