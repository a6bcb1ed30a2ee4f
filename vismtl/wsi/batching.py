"""From chunks' tiles to the model's batches: each chunk's tiles read in one slide read
(:class:`ChunkTiles`), read ahead in a thread (:class:`Prefetched`) or by reading processes, and
joined into batches across chunks (:func:`batches_across_chunks`); the model's seconds
(:class:`ModelClock`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from queue import Empty, Full, Queue
from typing import Any, NamedTuple

import numpy as np
import torch

from vismtl.wsi.plan import SlidePlan
from vismtl.wsi.reading import ChunkReader, covering_box
from vismtl.wsi.settings import WSISettings

__all__ = ["ChunkTiles", "ModelClock", "Piece", "Prefetched", "as_images", "batches_across_chunks"]


class ChunkTiles:
    """Item ``k``: ``(k, the model inputs of chunk k's tiles, the unreadable ones)``: uint8 ``[n_k, 3,
    S, S]`` (S = tile + 2 context), channels-last, a view of the ``[n_k, S, S, 3]`` pixels, no copy
    (CPU convolutions are also several times faster on it than on a planar copy), and ``(index,
    error)`` of each tile left white because it could not be read. Read in this process (the
    reading thread) with a :class:`~vismtl.wsi.reading.ChunkReader`, or by a
    :class:`~vismtl.wsi.reading.ReadingPool` from :meth:`corners`. ``pin``: the inputs in pinned
    memory (for a GPU model: see :func:`as_images`).
    """

    def __init__(self, path: Path, scale: float, plan: SlidePlan, settings: WSISettings, pin: bool = False):
        self.path, self.scale, self.pin = path, scale, pin
        self.positions, self.bounds = plan.positions, np.cumsum([0, *plan.counts])
        self.size, self.context = settings.tile + 2 * settings.context, settings.context
        self._reader = ChunkReader(path)  # the slide opened on first use

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def corners(self, index: int) -> np.ndarray:
        """Chunk ``index``'s tile corners, context included (``[n, 2]`` (y, x) on the output grid)."""
        return self.positions[self.bounds[index] : self.bounds[index + 1]] - self.context

    def box(self, index: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """Chunk ``index``'s tile corners and the ``(x, y, w, h)`` read that covers them."""
        corners = self.corners(index)
        return corners, covering_box(corners, self.size)

    def close(self) -> None:
        self._reader.close()

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, list[tuple[int, str]]]:
        corners = self.corners(index)
        if not len(corners):  # every tile of it comes from the tile cache
            return index, as_images(np.zeros((0, self.size, self.size, 3), np.uint8)), []
        tiles, unreadable = self._reader.read(corners, self.size, self.scale)
        return index, as_images(tiles, self.pin), unreadable


def as_images(tiles: np.ndarray, pin: bool = False, copy: bool = False) -> torch.Tensor:
    """uint8 ``[n, S, S, 3]`` -> the model's ``[n, 3, S, S]``, channels-last: a view, or a copy
    with ``pin`` (in pinned memory, for copies to a GPU that do not wait: one from pageable memory
    may wait for the stream, i.e. for the batch the model is computing) or ``copy`` (``tiles``
    is memory about to be reused: a reading process's block). Torch copies without the GIL."""
    images = torch.from_numpy(tiles)
    if pin:
        images = images.pin_memory()
    elif copy:
        images = images.clone()
    return images.permute(0, 3, 1, 2)


class Piece(NamedTuple):
    """Rows ``offset : offset + count`` of a batch: tiles ``start : start + count`` of chunk
    ``chunk``, which has ``total`` tiles to compute (0: all taken from the tile cache)."""

    chunk: int
    start: int
    count: int
    total: int
    offset: int


def batches_across_chunks(
    chunks: Iterable[tuple[int, torch.Tensor]],
    size: int,
    seconds: dict[str, float],
    device: torch.device | None = None,
) -> Iterator[tuple[list[Piece], torch.Tensor]]:
    """Batches of ``size`` tiles filled from consecutive chunks, with the pieces they hold in order.

    A chunk of fewer tiles than a batch (about 10 of 16 with the tile cache) would otherwise
    make a small batch: on a GPU each call's launches cost as much as a full one's. Every
    chunk appears in a piece, in order, those with no tile to compute as an empty one; the
    last batch may be short (or empty, holding only such chunks). Seconds spent waiting for
    ``chunks`` are added to ``seconds["input_wait_s"]``. The batch is joined on ``device``
    (default: where the tiles are): on a GPU each piece is copied there from the loader's
    pinned memory without waiting, and the join is the GPU's, not a copy in the model's thread.
    """
    pieces: list[Piece] = []
    held: list[torch.Tensor] = []  # tiles of the batch being filled
    filled = 0
    chunks = iter(chunks)
    while True:
        waited = time.perf_counter()
        chunk_index, images = next(chunks, (None, None))
        seconds["input_wait_s"] += time.perf_counter() - waited
        if chunk_index is None:
            break
        start, total = 0, len(images)
        if total == 0:
            pieces.append(Piece(chunk_index, 0, 0, 0, filled))
        while start < total:
            count = min(size - filled, total - start)
            pieces.append(Piece(chunk_index, start, count, total, filled))
            held.append(images[start : start + count].to(device or images.device, non_blocking=True))
            filled += count
            start += count
            if filled == size:
                yield pieces, _joined(held)
                pieces, held, filled = [], [], 0
    if pieces:
        yield pieces, _joined(held)


def _joined(tiles: list[torch.Tensor]) -> torch.Tensor:
    """The tiles as one batch (a chunk's own slice when it fills the batch alone: no copy)."""
    if len(tiles) == 1:
        return tiles[0]
    return torch.cat(tiles) if tiles else torch.zeros((0,), dtype=torch.uint8)


class ModelClock:
    """Seconds the model computed, and the gaps between its calls. On the CPU, wall time around
    each call; on a GPU, CUDA events around the model's kernels, read at the end, so that the
    model's thread queues the next batch while the GPU computes this one instead of waiting for it
    (the busy time is the GPU's, not that of the queue or of a thread waiting on it).

    :meth:`gaps`: the seconds between one call's end and the next one's start (on a GPU, the
    device's: what keeps it under 100 % busy between the first batch and the last), and the part
    of them before the model's thread even began the next call (on a GPU: the device waited for
    the thread; the rest went to work queued between the calls, such as the batch's copies and
    the stitching's kernels, or to a wait elsewhere). On the CPU the thread is always the late
    one. A GPU clock synchronises once, at its first call, to place the device's times on the
    thread's clock."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._events: list[tuple[Any, Any, float]] = []  # per GPU call: start, end, the thread's start
        self._origin: tuple[Any, float] | None = None  # an event and the thread's time when it ran
        self._seconds = 0.0
        self._started = 0.0
        self._ended: float | None = None  # the last call's end (the CPU's, or the GPU's since the origin)
        self._gap = self._gap_late = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()
        if not self.cuda:
            if self._ended is not None:
                self._gap += self._started - self._ended
                self._gap_late += self._started - self._ended
            return
        if self._origin is None:
            origin = torch.cuda.Event(enable_timing=True)
            origin.record()
            origin.synchronize()
            self._origin = origin, time.perf_counter()
        self._events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True), self._started))
        self._events[-1][0].record()

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self._events[-1][1].record()
        else:
            self._ended = time.perf_counter()
            self._seconds += self._ended - self._started

    def seconds(self) -> float:
        if self._events:
            self._events[-1][1].synchronize()
            origin, at = self._origin
            for start, end, began in self._events:
                start_s, end_s = origin.elapsed_time(start) / 1000.0, origin.elapsed_time(end) / 1000.0
                self._seconds += end_s - start_s
                if self._ended is not None:
                    gap = max(start_s - self._ended, 0.0)
                    self._gap += gap
                    self._gap_late += min(max(began - at - self._ended, 0.0), gap)
                self._ended = end_s
            self._events.clear()
        return self._seconds

    def gaps(self) -> tuple[float, float]:
        """``(seconds between calls, of which before the model's thread began the next)``, up to
        :meth:`seconds`' last call."""
        return self._gap, self._gap_late


class Prefetched(Iterator):
    """``items``, produced by a background thread up to ``depth`` ahead, from construction on (a
    slide's first chunks are read while the slide before it still runs); its errors re-raised
    by ``next``. ``close()`` stops and joins the thread, also before the first item."""

    _END = object()

    def __init__(self, items: Iterable, depth: int = 2) -> None:
        self._queue: Queue = Queue(maxsize=depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._produce, args=(items,), name="vismtl-reader", daemon=True)
        self._thread.start()

    def _produce(self, items: Iterable) -> None:
        try:
            for item in items:
                if not self._put((item, None)):
                    return
            self._put((self._END, None))
        except BaseException as err:  # noqa: BLE001 -- handed to the consumer
            self._put((self._END, err))

    def _put(self, entry: tuple) -> bool:
        """Queue ``entry`` unless closed meanwhile (then False)."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def __next__(self):
        if self._ended:
            raise StopIteration
        item, error = self._queue.get()
        if item is self._END:
            self.close()
            if error is not None:
                raise error
            raise StopIteration
        return item

    def close(self) -> None:
        self._ended = True
        self._stop.set()
        try:  # unblock a producer waiting on a full queue
            while True:
                self._queue.get_nowait()
        except Empty:
            pass
        self._thread.join()
