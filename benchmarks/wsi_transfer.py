"""Handing a slide's tiles from the reading processes to the engine: the cost on the engine's side.

    python benchmarks/wsi_transfer.py [--size 20000] [--workers 2] [--repeats 5]

On a GPU the engine's one process launches the model's kernels, stitches, and takes in every
tile the reading processes read; its threads share one GIL, so what it spends holding that lock
bounds the slide (the "cores" column of ``wsi_throughput.py``: about 1 on an H200). This reads
every chunk of the bench slide (the histology settings: 256 px tiles with 32 px of context, the
tile cache on) in ``--workers`` reading processes, a few chunks ahead, two ways:

- through the pool's pipe, as until 2026-11-28: each chunk's tiles pickled by the process, read
  by the engine in 64 KB pieces, joined and unpickled (copies under the GIL);
- through shared memory (now): the process writes the tiles into a block of the engine's, which
  copies them out once into the model's input tensor (torch's copy, without the GIL), then
  reuses the block.

"engine CPU s": CPU seconds of the engine's process (all its threads but the launches' below)
per pass over the slide, which is what the model's launches compete with; wall: the pass's seconds. Medians of
``--repeats`` passes, alternating, after one untimed pass each (processes up, slide open).

"lost s": meanwhile the main thread runs the histology quickstart model on one 16 px tile over
and over, with one PyTorch thread: on the CPU each of its ops takes microseconds, about what
launching it on a GPU takes, so its forwards stand for the GPU model thread's launches. The
column gives the seconds those forwards took during the pass beyond what they take alone: the
launching thread held back by the transfer. On a 2-core VM the reading processes also take CPU
from it (decoding, and copying or pickling the tiles); "served decoded" rows leave decoding out:
the processes serve tiles decoded beforehand into a file, so only the handing over is measured.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_description, quickstart_histology  # noqa: E402
from vismtl.wsi import WSISettings, reading  # noqa: E402
from vismtl.wsi.batching import ChunkTiles, as_images  # noqa: E402
from vismtl.wsi.reading import ReadingPool, reader_of  # noqa: E402
from vismtl.wsi.workers import mapped_block  # noqa: E402
from wsi_throughput import bench_plan, make_slide  # noqa: E402

_SERVED: dict[str, tuple[np.ndarray, dict[bytes, int]]] = {}  # a reading process's decoded tiles, by file


def served(path: str, corners: np.ndarray) -> np.ndarray:
    """The tiles at ``corners`` from ``path``, a file of tiles decoded beforehand (``--served``: the
    transfer alone, without the processes' decoding, which on a GPU machine has cores of its own)."""
    if path not in _SERVED:
        with open(path + ".index", "rb") as index:
            _SERVED[path] = np.load(path, mmap_mode="r"), pickle.load(index)
    tiles, first = _SERVED[path]
    start = first[corners.tobytes()]
    return tiles[start : start + len(corners)]


def serve_decoded(path: Path, tiles: ChunkTiles) -> Path:
    """Every chunk's tiles decoded into one file, and where each chunk's begin."""
    chunks = [tiles.corners(k) for k in range(len(tiles)) if len(tiles.corners(k))]
    size, count = tiles.size, sum(len(c) for c in chunks)
    decoded = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, size, size, 3))
    index, start = {}, 0
    for corners in chunks:
        tiles._reader.read(corners, size, 1.0, decoded[start : start + len(corners)])
        index[corners.tobytes()], start = start, start + len(corners)
    decoded.flush()
    with open(str(path) + ".index", "wb") as out:
        pickle.dump(index, out)
    return path


def read_pickled(path: str, scale: float, corners: np.ndarray, size: int):
    """In a reading process, as until 2026-11-28: the chunk's tiles returned through the pool's pipe."""
    if path.endswith(".npy"):
        return np.array(served(path, corners)), []
    return reader_of(path).read(corners, size, scale)


def served_into(path: str, scale: float, corners: np.ndarray, size: int, block_name: str) -> list:
    """``reading._read`` for a file of decoded tiles: the same copy into the engine's block."""
    out = np.ndarray((len(corners), size, size, 3), np.uint8, buffer=mapped_block(block_name).buf)
    out[:] = served(path, corners)
    del out
    return []


def through_pipe(pool: ReadingPool, path: Path, corners: list[np.ndarray], size: int, ahead: int) -> int:
    executor, pending, submitted, tiles = pool.start(), deque(), 0, 0
    for _ in range(len(corners)):  # as ReadingPool.chunks: at most ``ahead`` chunks being read
        while submitted < len(corners) and len(pending) < ahead:
            chunk = corners[submitted]
            pending.append(executor.submit(read_pickled, str(path), 1.0, chunk, size) if len(chunk) else None)
            submitted += 1
        future = pending.popleft()
        if future is not None:  # a chunk whose tiles all come from the tile cache reads nothing
            tiles += len(as_images(future.result()[0]))
    return tiles


def through_blocks(pool: ReadingPool, path: Path, corners: list[np.ndarray], size: int, ahead: int) -> int:
    pin = torch.cuda.is_available()
    take = lambda view: as_images(view, pin, copy=True)  # noqa: E731 -- as the engine takes them
    return sum(len(images) for images, _ in pool.chunks(path, 1.0, corners, size, ahead, take))


class Launches:
    """The quickstart model on one small tile, run over and over in this thread while ``busy`` is
    set: each forward's seconds (its ops take what launching them on a GPU takes)."""

    def __init__(self) -> None:
        self.model, _ = quickstart_histology()
        self.tile = torch.zeros((1, 3, 16, 16), dtype=torch.uint8)

    def forward_seconds(self, busy: threading.Event | None = None, count: int = 50) -> list[float]:
        seconds = []
        with torch.inference_mode():
            while (busy.is_set() if busy is not None else len(seconds) < count) or not seconds:
                started = time.perf_counter()
                self.model(self.tile)
                seconds.append(time.perf_counter() - started)
        return seconds


def timed_pass(way, launches: Launches, *args) -> tuple[float, float, list[float]]:
    """(engine CPU s but the launches', wall s, each forward's s) of one pass of ``way`` in a thread
    beside the launches."""
    busy = threading.Event()
    busy.set()

    def transfer() -> None:
        try:
            way(*args)
        finally:
            busy.clear()

    cpu, wall, launching = time.process_time(), time.perf_counter(), time.thread_time()
    thread = threading.Thread(target=transfer)
    thread.start()
    forwards = launches.forward_seconds(busy)
    launching = time.thread_time() - launching  # this thread's: not the transfer's
    thread.join()
    return time.process_time() - cpu - launching, time.perf_counter() - wall, forwards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vismtl_bench")
    args = parser.parse_args()
    torch.set_num_threads(1)  # ops of microseconds, as launches are
    args.cache.mkdir(parents=True, exist_ok=True)
    slide = make_slide(args.cache / f"tissue_{args.size}.tiff", args.size)  # wsi_throughput.py's
    settings = WSISettings(mpp=0.5, tile=256, context=32, chunk=1024, margin=64)
    tiles = ChunkTiles(slide, 1.0, bench_plan(slide, settings, margin=64), settings)
    corners = [tiles.corners(k) for k in range(len(tiles))]
    ahead = 2 * args.workers  # as the engine reads
    ways = {"through the pool's pipe (until now)": through_pipe, "through shared-memory blocks (now)": through_blocks}
    launches = Launches()
    pool = ReadingPool(args.workers)
    with tempfile.TemporaryDirectory() as scratch:
        decoded = serve_decoded(Path(scratch) / "tiles.npy", tiles)
        sources = {"decoded by the processes": slide, "served decoded": decoded}
        runs = {(source, way): [] for source in sources for way in ways}
        reads = reading._read
        try:
            pool.wait_ready()
            counts = {}
            for repeat in range(args.repeats + 1):  # the first: untimed, and its counts checked
                for (source, name), passes in runs.items():
                    reading._read = served_into if source == "served decoded" else reads
                    read = (pool, sources[source], corners, tiles.size, ahead)
                    if repeat:
                        passes.append(timed_pass(ways[name], launches, *read))
                    else:
                        counts[source, name] = ways[name](*read)
                if not repeat:
                    assert len(set(counts.values())) == 1, counts
                    alone = statistics.median(launches.forward_seconds())
        finally:
            reading._read = reads
            pool.close()
    count = next(iter(counts.values()))
    megabytes = count * tiles.size**2 * 3 / 1e6
    print(f"device: {device_description()}; {args.workers} reading processes; {len(corners)} chunks,")
    print(f"{count} tiles of {tiles.size} px ({megabytes:.0f} MB) per pass; medians of {args.repeats}")
    print(f"the model's forward on one 16 px tile alone: {1000 * alone:.2f} ms")
    columns = f"{'engine CPU s':>12s} {'vs pipe':>8s} {'wall s':>8s} {'tiles/s':>8s} {'lost s':>9s}"
    print(f"{'tiles':26s} {'way':38s} {columns}")
    for (source, name), passes in runs.items():
        cpu, wall = (statistics.median(run[k] for run in passes) for k in range(2))
        lost = statistics.median(sum(run[2]) - len(run[2]) * alone for run in passes)
        base = statistics.median(run[0] for run in runs[source, next(iter(ways))])
        print(f"{source:26s} {name:38s} {cpu:12.3f} {base / cpu:7.1f}x {wall:8.3f} {count / wall:8.0f} {lost:9.3f}")


if __name__ == "__main__":
    main()
