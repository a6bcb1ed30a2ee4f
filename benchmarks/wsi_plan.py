"""Planning a slide (which tiles each chunk computes): tissue looked up tile by tile or every tile at once.

    python benchmarks/wsi_plan.py [--repeats 5]

A slide's plan (``plan_slide``) asks, for every tile of every chunk's core and region, whether
it touches tissue. Until 2026-11-28 each question was a Python call on the tissue mask's
summed-area table (``per tile`` below, kept here as the baseline); ``TissueIndex.touching`` now
answers them all with a few numpy operations. In a batch a slide is planned in a helper thread
while the slide before it runs, so its Python also holds the GIL the model's thread launches
kernels with on a GPU. Slides: the 20,000 px bench slide's output grid (0.5 um/px, 256 px tiles,
1,024 px chunks, 64 px margins, the tile cache on) and 100,000 px, each with the same three
tissue regions on a 2,048 px mask (the layout of ``wsi_memory.py``). The two ways' plans are
checked equal first; medians of ``--repeats``, alternating.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_description  # noqa: E402
from vismtl.wsi.plan import plan_slide  # noqa: E402
from vismtl.wsi.tiling import TileLayout, TissueIndex  # noqa: E402


class PerTile(TissueIndex):
    """The tissue looked up one tile at a time (each a Python call), as until 2026-11-28."""

    def touching(self, layout: TileLayout) -> PerTile:
        self.tile = layout.tile
        return self

    def __contains__(self, corner: tuple[int, int]) -> bool:
        y0, x0 = corner
        y1, x1 = y0 + self.tile, x0 + self.tile
        height, width = self.shape
        r0 = min(max(math.floor(y0 * self.scale), 0), height)
        c0 = min(max(math.floor(x0 * self.scale), 0), width)
        r1 = min(max(math.ceil(y1 * self.scale), 0), height)
        c1 = min(max(math.ceil(x1 * self.scale), 0), width)
        if r1 <= r0 or c1 <= c0:
            return False
        t = self.table
        return bool(t[r1, c1] - t[r0, c1] - t[r1, c0] + t[r0, c0] > 0)


def tissue_mask(side: int = 2048) -> np.ndarray:
    mask = np.zeros((side, side), bool)
    for y0, x0, y1, x1 in ((0.15, 0.2, 0.34, 0.44), (0.59, 0.1, 0.73, 0.29), (0.78, 0.73, 0.93, 0.93)):
        mask[int(y0 * side) : int(y1 * side), int(x0 * side) : int(x1 * side)] = True
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    mask = tissue_mask()
    print(f"device: {device_description()}; medians of {args.repeats}, the two ways alternating")
    print(f"{'slide':>9s} {'tiles':>7s} {'chunks':>7s} {'per tile s':>11s} {'at once s':>10s} {'ratio':>7s}")
    for side in (20_000, 100_000):
        layout = TileLayout(side, side, tile=256, stride=256, context=32, chunk=1024, margin=64)
        ways = {"per tile": PerTile(mask, mask.shape[0] / side), "at once": TissueIndex(mask, mask.shape[0] / side)}
        plans = {name: plan_slide(layout, tissue, {}, 0.5, 512 * 2**20, 4 * 12) for name, tissue in ways.items()}
        first, second = plans.values()
        assert np.array_equal(first.positions, second.positions) and first.counts == second.counts
        assert (first.chunks, first.kept, first.taken) == (second.chunks, second.kept, second.taken)
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, tissue in ways.items():
                started = time.perf_counter()
                plan_slide(layout, tissue, {}, 0.5, 512 * 2**20, 4 * 12)
                seconds[name].append(time.perf_counter() - started)
        per_tile, at_once = (statistics.median(seconds[name]) for name in ways)
        counts = f"{len(first.positions):7,d} {len(first.chunks):7,d}"
        print(f"{side:9,d} {counts} {per_tile:11.3f} {at_once:10.3f} {per_tile / at_once:6.1f}x")


if __name__ == "__main__":
    main()
