"""Which tiles each chunk of a slide computes, and which it takes from the tile cache.

A chunk is computed from the tiles that cover its region, its core grown by the margin. With
64 px margins the region of a 1024 px chunk meets 36 tiles of 256 px: its own 16 and a ring
of 20 in its neighbours' cells, which those neighbours compute again for themselves (2.25x
the work on a large piece of tissue). Chunks run in raster order, so a tile is needed first by
one chunk and then by up to three more: the first computes it, and the parts the later ones
need are kept (:class:`vismtl.wsi.tile_cache.TileCache`) until the last of them has taken
them. With a large enough cache every tile is computed once.

Only disjoint tiles under a flat window are shared (the default: stride = tile): a pixel then
comes from exactly one tile, so a kept tile gives a later chunk exactly what computing it
would. The cache has a budget in bytes; a tile that does not fit is computed again by its next
chunk, which may keep it in turn. The plan makes every decision in advance and the pipeline
follows it, so the two cannot disagree. A tile now runs in the batch of whichever chunk needs
it first, which a resumed run may change: the outputs stay the same bit for bit where a tile's
outputs do not depend on the other tiles of its batch (the dense outputs of the histology
model on the CPU do not; a GPU may pick other convolution algorithms for another batch size,
which changes float rounding).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from vismtl.wsi.tiling import Box, TileLayout, TissueIndex

Corner = tuple[int, int]  # a tile's kept-region top-left corner on the output grid


@dataclass
class SlidePlan:
    """Which tiles each chunk computes and which it takes from the cache, in the order of computing."""

    layout: TileLayout
    chunks: list[tuple[int, int]]  # unfinished chunks with tissue, in raster order
    positions: np.ndarray  # [N, 2] corners of the tiles computed, chunk after chunk
    counts: list[int]  # tiles computed per chunk (rows of ``positions``, in order)
    mpp: float  # level-0 microns per pixel
    skipped: int = 0  # chunks without tissue in their core
    kept: dict[int, tuple[Box, ...]] = field(default_factory=dict)  # row of positions -> parts kept for later
    taken: list[list[tuple[Corner, bool]]] = field(default_factory=list)  # per chunk: (tile, last use) from the cache
    peak_bytes: int = 0  # the cache's largest size

    @property
    def shared(self) -> int:
        """Tiles taken from the cache instead of computed again."""
        return sum(len(taken) for taken in self.taken)


def plan_slide(
    layout: TileLayout, tissue: TissueIndex, finished: Mapping, mpp: float, cache_bytes: int = 0, pixel_bytes: int = 0
) -> SlidePlan:
    """The tiles of every unfinished chunk whose core some tissue tile covers.

    A chunk whose core no tile covers is skipped even when tiles run in its margin: nothing
    there is written (its rasters stay the arrays' 0) and it owns no object, since objects
    never reach pixels no tile ran on (:func:`vismtl.wsi.stitch.finish_maps`).

    ``cache_bytes``: the tile cache's budget (0: every chunk computes all its tiles);
    ``pixel_bytes``: what one output pixel of a tile costs there (its channels x 4).
    """
    if cache_bytes and layout.stride != layout.tile:
        raise ValueError("tiles are shared between chunks only when they are disjoint (stride = tile)")

    touching = tissue.touching(layout)

    def with_tissue(box):
        return [t for t in layout.tiles(box) if t in touching]

    chunks, skipped = [], 0
    for chunk in layout.chunks():
        if chunk in finished:
            continue
        if with_tissue(layout.core(*chunk)):
            chunks.append(chunk)
        else:
            skipped += 1
    regions = [layout.region(*chunk) for chunk in chunks]
    needs = [with_tissue(region) for region in regions]
    needers: dict[Corner, list[int]] = defaultdict(list)
    for i, tiles in enumerate(needs):
        for tile in tiles:
            needers[tile].append(i)

    plan = SlidePlan(layout, chunks, np.zeros((0, 2), np.int64), [], mpp, skipped)
    cache: dict[Corner, tuple[int, int]] = {}  # tile -> (bytes, the last chunk to take it)
    used, positions = 0, []
    for i, tiles in enumerate(needs):
        taken, computed = [], []
        for tile in tiles:
            if tile in cache:
                size, last = cache[tile]
                taken.append((tile, last == i))
                if last == i:
                    used -= size
                    del cache[tile]
            else:
                computed.append(tile)
        for j, tile in enumerate(computed):
            later = [k for k in needers[tile] if k > i]
            if not later or not cache_bytes:
                continue
            parts = _parts(_tile_box(tile, layout.tile), [regions[k] for k in later])
            size = pixel_bytes * sum((b[2] - b[0]) * (b[3] - b[1]) for b in parts)
            if used + size <= cache_bytes:
                cache[tile] = (size, later[-1])
                plan.kept[len(positions) + j] = parts
                used += size
                plan.peak_bytes = max(plan.peak_bytes, used)
        positions += computed
        plan.counts.append(len(computed))
        plan.taken.append(taken)
    plan.positions = np.asarray(positions, np.int64).reshape(-1, 2)
    return plan


def _tile_box(corner: Corner, tile: int) -> Box:
    return corner[0], corner[1], corner[0] + tile, corner[1] + tile


def _parts(tile: Box, regions: list[Box]) -> tuple[Box, ...]:
    """The pieces of ``tile`` inside each region, without those another piece contains."""
    pieces = {b for b in (intersect(tile, region) for region in regions) if b is not None}
    return tuple(sorted(b for b in pieces if not any(o != b and contains(o, b) for o in pieces)))


def intersect(a: Box, b: Box) -> Box | None:
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[0] < box[2] and box[1] < box[3] else None


def contains(outer: Box, inner: Box) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def within(box: Box, outer: Box) -> tuple[slice, slice]:
    """Slices of ``box`` in an array covering ``outer``."""
    return slice(box[0] - outer[0], box[2] - outer[0]), slice(box[1] - outer[1], box[3] - outer[1])
