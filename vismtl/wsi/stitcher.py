"""From the model's outputs to finished chunks: blending into canvases, kept tiles, votes, writers.

The model's thread hands each chunk's batches to a :class:`ChunkStitcher`, either directly
(the default) or through a :class:`StitchThread` (``wsi.stitch_thread``: the model's thread
then only reads batches and launches the model, and the stitching's own launches and Python
run beside it, on a GPU on a CUDA stream of their own). Both give the same outputs: the same
calls in the same order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from queue import Empty, Full, Queue, SimpleQueue

import numpy as np
import torch

from vismtl.tasks import Task
from vismtl.wsi.plan import SlidePlan
from vismtl.wsi.settings import WSISettings
from vismtl.wsi.stitch import ChunkCanvas, ChunkJob, finalize_chunk
from vismtl.wsi.tile_cache import TileCache


class ChunkStitcher:
    """Blends a slide's batches into chunk canvases and hands each finished chunk to a writer.

    Per chunk: :meth:`begin`, :meth:`add` per batch of its tiles (in the plan's order), :meth:`end`;
    :meth:`close` waits for the last writes. Each returns the seconds it waited for the writers.

    Args:
        tasks: the model's tasks (dense ones are blended; image-level ones vote).
        settings: the run's settings.
        device: the model's device (canvases live there).
        plan: the slide's plan (tiles, chunks, kept and taken tiles).
        write: ``write(canvas, ready, chunk, spare) -> None`` (:func:`finish_chunk` with the run's
            arguments bound), run by a writer thread per finished chunk: ``ready`` is the GPU
            event after the chunk's last batch (None on the CPU), ``spare`` takes back the
            canvas's buffers for a later chunk.
        writer: the writer threads' pool; ``writers``: its size.
        spare: where finished chunks' canvas buffers go for later chunks (the runner's: shared by the
            slides of a batch, whose next slide's first chunks take the last one's).
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        settings: WSISettings,
        device: torch.device,
        plan: SlidePlan,
        write,
        writer: ThreadPoolExecutor,
        writers: int,
        spare: SimpleQueue,
    ) -> None:
        self.dense = {n: t for n, t in tasks.items() if t.dense}
        self.patch = {n: t for n, t in tasks.items() if not t.dense}
        self.settings, self.device, self.plan = settings, device, plan
        self.write, self.writer, self.writers = write, writer, writers
        self.cache = TileCache(settings.tile)
        self.spare = spare
        self.pending: list[Future] = []
        self.starts = np.cumsum([0, *plan.counts])  # each chunk's first row of plan.positions
        self.channels = {n: t.num_outputs for n, t in self.dense.items()}
        self.disjoint = settings.step >= settings.tile
        self.canvas: ChunkCanvas | None = None

    def begin(self, chunk_index: int, count: int) -> float:
        """Start chunk ``chunk_index``, of which the model computes ``count`` tiles."""
        plan, settings = self.plan, self.settings
        self.chunk = plan.chunks[chunk_index]
        recycled = self.spare.get_nowait() if not self.spare.empty() else None
        region = plan.layout.region(*self.chunk)
        self.canvas = ChunkCanvas(
            region, self.channels, settings.tile, settings.blend, self.device, recycled, self.disjoint
        )
        self.core = plan.layout.core(*self.chunk)
        self._take(plan.taken[chunk_index])
        self.first = int(self.starts[chunk_index])
        # positions stay on the CPU, in numpy: reading them back from a GPU would wait for its
        # queue, and every torch call (even on the CPU) gives up the GIL the model's launches need
        self.positions = plan.positions[self.first : self.first + count]
        return 0.0

    def add(self, start: int, activated: Mapping[str, torch.Tensor]) -> float:
        """The activated outputs of the chunk's tiles ``start, start + 1, ...``."""
        count = len(next(iter(activated.values())))
        where = self.positions[start : start + count]
        tiles = self.canvas.add({n: self._kept(activated[n]) for n in self.dense}, torch.from_numpy(where))
        vote_patches(self.canvas, self.patch, activated, where, self.core)
        self._keep(self.first + start, tiles, activated, where)
        return 0.0

    def end(self) -> float:
        """Hand the chunk to a writer; wait while more than ``writers + 1`` chunks are in flight."""
        ready = chunk_ready(self.device)
        self.pending.append(self.writer.submit(self.write, self.canvas, ready, self.chunk, self.spare))
        self.canvas = None
        waited = time.perf_counter()
        self.pending = drain(self.pending, keep=self.writers + 1)
        return time.perf_counter() - waited

    def close(self) -> float:
        waited = time.perf_counter()
        self.pending = drain(self.pending, keep=0)
        return time.perf_counter() - waited

    def _kept(self, activated: torch.Tensor) -> torch.Tensor:
        ctx, tile = self.settings.context, self.settings.tile
        return activated[:, :, ctx : ctx + tile, ctx : ctx + tile]

    def _take(self, taken) -> None:
        """Copy the tiles the plan takes from the cache into the canvas; count the votes of those in its core."""
        if not taken:
            return
        patch = [self.cache.take(self.canvas, corner, last) for corner, last in taken]
        if self.patch:
            corners = np.array([corner for corner, _ in taken])
            stacked = {n: torch.stack([p[n] for p in patch]) for n in self.patch}
            vote_patches(self.canvas, self.patch, stacked, corners, self.core)

    def _keep(self, first_row: int, tiles: torch.Tensor | None, activated, positions) -> None:
        """Keep the parts of this batch's tiles (``[N, C, tile, tile]``, the canvas's channels) that
        later chunks will take (rows of plan.positions)."""
        for k in range(len(positions)):
            parts = self.plan.kept.get(first_row + k)
            if parts and tiles is not None:
                corner = (int(positions[k, 0]), int(positions[k, 1]))  # numpy: no torch call
                patch = {n: activated[n][k] for n in self.patch}
                self.cache.keep(corner, parts, tiles[k], patch)


class StitchThread:
    """A :class:`ChunkStitcher` in a thread of its own, fed by the model's thread.

    Calls are queued (at most ``depth`` batches ahead) and return the seconds the model's
    thread waited for room in the queue. On a GPU the thread runs on a stream of its own,
    each batch after an event recorded behind the model's work on it, and the batch's outputs
    are marked as used on that stream (so their memory is not reused before it is done).
    An error in the thread is raised in the model's thread by its next call.
    """

    def __init__(self, stitcher: ChunkStitcher, device: torch.device, depth: int = 4) -> None:
        self.stitcher = stitcher
        self.stream = torch.cuda.Stream(device=device) if device.type == "cuda" else None
        self.queue: Queue = Queue(maxsize=depth)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="vismtl-stitch", daemon=True)
        self.thread.start()

    def begin(self, chunk_index: int, count: int) -> float:
        return self._put("begin", chunk_index, count)

    def add(self, start: int, activated: Mapping[str, torch.Tensor]) -> float:
        if self.stream is not None:
            for value in activated.values():
                value.record_stream(self.stream)
        return self._put("add", start, activated, after=chunk_ready(self.stitcher.device))

    def end(self) -> float:
        return self._put("end")

    def close(self) -> float:
        """Wait for the last writes, then for the thread; re-raise its error."""
        waited = self._put("close")
        started = time.perf_counter()
        self._put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return waited + time.perf_counter() - started

    def abort(self) -> None:
        """Stop the thread without finishing (the model's thread failed)."""
        self.stop.set()
        self.thread.join()

    def _put(self, method: str | None, *args, after=None) -> float:
        started = time.perf_counter()
        while True:
            self._raise()
            try:
                self.queue.put((method, args, after), timeout=0.1)
                return time.perf_counter() - started
            except Full:
                continue

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
        if not self.thread.is_alive() and not self.stop.is_set():
            raise RuntimeError("the stitching thread stopped")

    def _run(self) -> None:
        try:
            with torch.inference_mode(), on_stream(self.stream):
                while not self.stop.is_set():
                    try:
                        method, args, after = self.queue.get(timeout=0.1)
                    except Empty:
                        continue
                    if method is None:
                        return
                    if after is not None:
                        self.stream.wait_event(after)
                    getattr(self.stitcher, method)(*args)
        except BaseException as err:  # noqa: BLE001 -- raised in the model's thread
            self.error = err


def vote_patches(canvas: ChunkCanvas, patch_tasks: Mapping[str, Task], activated, positions, core) -> None:
    """Record the patch classes of tiles at ``positions`` (their kept corners, numpy ``[N, 2]``) and
    which lie in the chunk's core (whose votes count: :func:`~vismtl.wsi.stitch.patch_classes`).
    The classes stay where the outputs are, until the writer copies the chunk's at once: nothing
    here waits for a GPU or copies to it."""
    if not patch_tasks:
        return
    y, x = positions[:, 0], positions[:, 1]
    in_core = (y >= core[0]) & (y < core[2]) & (x >= core[1]) & (x < core[3])
    for name in patch_tasks:
        canvas.patch_tiles.setdefault(name, []).append((positions, in_core, activated[name].argmax(dim=1)))


def chunk_ready(device: torch.device) -> torch.cuda.Event | None:
    """On a GPU, an event after the work queued so far on the current stream; else None."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record()
    return event


@contextmanager
def on_stream(stream: torch.cuda.Stream | None) -> Iterator[None]:
    """``stream`` as the current stream (nothing without one); waits for it on exit."""
    if stream is None:
        yield
        return
    with torch.cuda.stream(stream):
        try:
            yield
        finally:
            stream.synchronize()


def side_stream(device: torch.device, ready: torch.cuda.Event | None):
    """On a GPU, a stream of its own for a writer's work on a chunk (normalising, decisions,
    copies to the host), starting after ``ready``: it neither waits for the model's later
    batches nor runs inside the model's clock. Waits for that stream on exit, so the chunk's
    buffers can be reused."""
    if ready is None:
        return on_stream(None)
    stream = torch.cuda.Stream(device=device)
    stream.wait_event(ready)
    return on_stream(stream)


def drain(pending: list[Future], keep: int) -> list[Future]:
    """Wait until at most ``keep`` writes are in flight, re-raising the errors of those done.

    Any write that ends makes room, not only the oldest: chunks take from a few ms (glass) to
    half a second (dense tissue), and waiting for a slow oldest one would idle the writers
    that are already free."""
    while True:
        for future in pending:
            if future.done():
                future.result()  # surface a writer's error now, not at the end of the slide
        pending = [f for f in pending if not f.done()]
        if len(pending) <= keep:
            return pending
        wait(pending, return_when=FIRST_COMPLETED)


def finish_chunk(
    canvas: ChunkCanvas,
    ready,
    chunk,
    spare: SimpleQueue,
    *,
    tasks: Mapping[str, Task],
    finisher,
    plan: SlidePlan,
    scale: float,
    outputs,
    device: torch.device,
    decide_on_gpu: bool = False,
) -> None:
    """A writer's job: finish a blended chunk (here or in a finishing process) and write it."""
    job = ChunkJob(canvas.region, plan.layout.core(*chunk), 1.0 / scale, plan.mpp)
    files = outputs.chunk_files(chunk, job.core)
    # inference mode: the canvas holds inference tensors, and this thread is not in that mode
    with torch.inference_mode(), side_stream(device, ready):
        result = finalize_chunk(canvas, job, tasks, finisher, files, decide_on_gpu and device.type == "cuda")
    spare.put((canvas.sums, canvas.weight_sum))  # for the next chunk's canvas
    outputs.write_chunk(files, result)
