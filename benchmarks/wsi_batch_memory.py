"""Memory over a batch of slides: the engine process's resident memory after each slide.

    python benchmarks/wsi_batch_memory.py [--slides 40] [--every 5] [--one-after-the-other]
        [--finish-workers N] [--histology-checkpoint CKPT]

A batch of ``--slides`` links to the generated 6,000 x 6,000 bench slide of ``wsi_throughput.py``
runs through ``SlideRunner.run_many`` (``SlideRunner.run`` per slide with
``--one-after-the-other``), with the histology tasks and the model's outputs on 16 real tiles
replayed (``wsi_throughput.Replayed``: the real post-processing, GeoJSON and pictures, without
the model's cost; trained weights given a checkpoint). Printed every ``--every`` slides: the
process's resident memory (RSS, the reading thread's and writers' included; chunk finishing
runs in the writer threads, the CPU default) as that slide's entry comes out, and the highest
seen since the line before (sampled every 20 ms). A batch must not grow with its length: what one
slide needs is freed when the next starts. With ``--finish-workers N`` (a GPU's way: chunks
finished and slides concluded in N processes), also the largest of those processes' RSS.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_description, quickstart_histology  # noqa: E402
from vismtl.wsi import SlideRunner, WSISettings  # noqa: E402
from wsi_batch import linked_slides  # noqa: E402
from wsi_throughput import DEVICE, Replayed, make_slide, real_outputs  # noqa: E402


def resident_mb(pid: int | str = "self") -> float:
    """A process's resident memory in MB (Linux; this one's by default)."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def workers_mb() -> float:
    """The largest resident memory of this process's worker processes (0 without any)."""
    return max((resident_mb(child.pid) for child in multiprocessing.active_children()), default=0.0)


class PeakSampler:
    """The highest :func:`resident_mb` seen since the last :meth:`take`, sampled every 20 ms in a thread."""

    def __init__(self) -> None:
        self.peak = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, resident_mb())

    def take(self) -> float:
        peak, self.peak = max(self.peak, resident_mb()), 0.0
        return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=40)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--one-after-the-other", action="store_true", help="SlideRunner.run per slide")
    parser.add_argument("--finish-workers", type=int, default=0, help="chunk-finishing processes (default: none)")
    parser.add_argument("--histology-checkpoint", help="weights for the histology model (default: random)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vismtl_bench")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    source = make_slide(args.cache / "tissue_6000.tiff", 6000)
    work = Path(tempfile.mkdtemp(prefix="wsi_batch_memory_", dir=args.cache))
    try:
        slides = linked_slides(source, work, args.slides)
        model, tasks = quickstart_histology(args.histology_checkpoint)
        replayed = Replayed(real_outputs(model, source, 6000, 320))
        settings = WSISettings(mpp=0.5, tile=256, context=32, chunk=1024, margin=64, finish_workers=args.finish_workers)
        print(f"device: {device_description()}; {args.slides} slides of 6,000 x 6,000 px, histology outputs replayed")
        print(f"{'slides done':>11s} {'RSS MB':>8s} {'peak RSS MB since the last line':>32s} {'worker RSS MB':>14s}")
        sampler = PeakSampler()
        with SlideRunner(replayed, tasks, settings, DEVICE) as runner:
            if args.one_after_the_other:
                entries = (runner.run(slide, work / "out", resume=False) for slide in slides)
            else:
                entries = runner.run_many(slides, work / "out", resume=False)
            for done, entry in enumerate(entries, 1):
                if entry["status"] != "done":
                    raise SystemExit(f"a slide failed: {entry}")
                if done == 1 or done % args.every == 0:
                    line = f"{done:11d} {resident_mb():8.0f} {sampler.take():32.0f} {workers_mb():14.0f}"
                    print(line, flush=True)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
