"""Which tiles each chunk of a slide computes, and which margins it takes from its neighbours.

A chunk is computed from the tiles that cover its region (its core grown by the margin). The
tiles of a margin lie in the neighbouring chunks' cores, so without sharing each is computed
once for its own chunk and once more for every neighbour whose margin it reaches: 36 tiles for
a 1024 px chunk of 16 tiles with 64 px margins. Chunks run in raster order, so the neighbours
above and to the left have already computed those tiles: a chunk takes their margin pixels from
the bands those neighbours kept (:class:`vismtl.wsi.margins.MarginBands`) and computes only
its own tiles and those of the neighbours still to come (26 of the 36).

Only disjoint tiles under a flat window are shared (the default: stride = tile): there a pixel
comes from exactly one tile, and every tile lies in one chunk's cell, so a neighbour's canvas
holds exactly what the tile would give. A band is kept for ``keep`` chunks of the plan (a
memory budget); a neighbour further back, or one finished by an earlier run, lends nothing and
its tiles are computed as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from vismtl.wsi.tiling import TileLayout, TissueIndex

EARLIER = ((-1, -1), (-1, 0), (-1, 1), (0, -1))  # neighbours computed before a chunk, in raster order


@dataclass
class SlidePlan:
    """Which tiles feed which chunk, in the order they will be computed."""

    layout: TileLayout
    chunks: list[tuple[int, int]]  # unfinished chunks with tissue, in raster order
    positions: np.ndarray  # [N, 2] tile kept-region corners, chunk after chunk (its core's tiles first)
    owner: np.ndarray  # [N] index into ``chunks``
    counts: list[int]  # tiles per chunk
    mpp: float  # level-0 microns per pixel
    skipped: int = 0  # chunks without tissue in their core
    core_counts: list[int] = field(default_factory=list)  # of ``counts``, tiles in the chunk's own cell
    lenders: list[tuple[int, ...]] = field(default_factory=list)  # per chunk: indices of chunks lending margins
    keep: int = 0  # how many chunks back (in this order) a chunk may take margins from
    shared: int = 0  # margin tiles taken from neighbours instead of computed


def plan_slide(layout: TileLayout, tissue: TissueIndex, finished: Mapping, mpp: float, keep: int = 0) -> SlidePlan:
    """The tiles of every unfinished chunk whose core some tissue tile covers.

    A chunk whose core no tile covers is skipped even when tiles run in its margin: nothing
    there is written (its rasters stay the arrays' 0) and it owns no object, since objects
    never reach pixels no tile ran on (:func:`vismtl.wsi.stitch.finish_maps`).

    ``keep``: how many chunks back (in this plan's order) a neighbour may lend its margin
    bands; 0 computes every margin tile. Only for disjoint tiles (stride = tile).
    """
    if keep and layout.stride != layout.tile:
        raise ValueError("margins are shared only between disjoint tiles (stride = tile)")

    def with_tissue(box):
        return [t for t in layout.tiles(box) if tissue.touches((*t, t[0] + layout.tile, t[1] + layout.tile))]

    chunks, skipped = [], 0
    for chunk in layout.chunks():
        if chunk in finished:
            continue
        if with_tissue(layout.core(*chunk)):
            chunks.append(chunk)
        else:
            skipped += 1
    index = {chunk: i for i, chunk in enumerate(chunks)}
    plan = SlidePlan(layout, chunks, np.zeros((0, 2), np.int64), np.zeros(0, np.int64), [], mpp, skipped, keep=keep)
    positions, owner = [], []
    for i, (cy, cx) in enumerate(chunks):
        near = {(cy + dy, cx + dx) for dy, dx in EARLIER}
        lenders = tuple(index[n] for n in sorted(near) if n in index and i - index[n] <= keep)
        lent = {chunks[j] for j in lenders}
        own, ring = [], []
        for tile in with_tissue(layout.region(cy, cx)):
            cell = layout.cell_of(*tile)
            if cell == (cy, cx):
                own.append(tile)
            elif cell in lent:
                plan.shared += 1
            else:
                ring.append(tile)
        positions += own + ring
        owner += [i] * (len(own) + len(ring))
        plan.counts.append(len(own) + len(ring))
        plan.core_counts.append(len(own))
        plan.lenders.append(lenders)
    plan.positions = np.asarray(positions, np.int64).reshape(-1, 2)
    plan.owner = np.asarray(owner, np.int64)
    return plan
