"""The output grid of a slide: chunks (the unit of writing and resuming) and the tiles that fill them.

Coordinates are output-grid pixels (the slide at the target microns per pixel), rows then
columns. A tile *keeps* ``tile x tile`` output pixels; the model sees ``context`` more on
every side, which is discarded. Tiles sit at multiples of ``stride`` (= ``tile`` for no
overlap). Each chunk is computed from the tiles that cover its *region*, the chunk grown
by ``margin`` on every side so that objects cut by the chunk border are seen whole; a
margin's tiles are computed once more, or taken from the neighbour that computed them
(:mod:`vismtl.wsi.plan`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]  # y0, x0, y1, x1 (half-open)


@dataclass(frozen=True)
class TileLayout:
    height: int
    width: int
    tile: int = 256
    stride: int = 256
    context: int = 32
    chunk: int = 1024
    margin: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.stride <= self.tile:
            raise ValueError(f"stride {self.stride} must be in 1..tile ({self.tile})")
        if self.chunk % self.stride:
            raise ValueError(f"chunk {self.chunk} must be a multiple of the stride {self.stride}")

    @property
    def chunk_grid(self) -> tuple[int, int]:
        return math.ceil(self.height / self.chunk), math.ceil(self.width / self.chunk)

    def chunks(self) -> list[tuple[int, int]]:
        rows, cols = self.chunk_grid
        return [(cy, cx) for cy in range(rows) for cx in range(cols)]

    def core(self, cy: int, cx: int) -> Box:
        """The chunk's own pixels, clipped to the grid."""
        y0, x0 = cy * self.chunk, cx * self.chunk
        return y0, x0, min(y0 + self.chunk, self.height), min(x0 + self.chunk, self.width)

    def region(self, cy: int, cx: int) -> Box:
        """The pixels computed for a chunk: its core grown by ``margin``."""
        y0, x0, y1, x1 = self.core(cy, cx)
        return y0 - self.margin, x0 - self.margin, y1 + self.margin, x1 + self.margin

    def starts(self, lo: int, hi: int) -> range:
        """Tile starts (multiples of the stride) whose kept span [s, s + tile) meets [lo, hi)."""
        first = math.floor((lo - self.tile) / self.stride) + 1
        last = math.ceil(hi / self.stride) - 1
        return range(first * self.stride, last * self.stride + 1, self.stride)

    def tiles(self, box: Box) -> list[tuple[int, int]]:
        """Top-left corners (kept region) of the tiles meeting ``box``."""
        y0, x0, y1, x1 = box
        return [(y, x) for y in self.starts(y0, y1) for x in self.starts(x0, x1)]


class TissueIndex:
    """O(1) 'does this output box touch tissue?' from a low-resolution mask (summed-area table).

    Args:
        mask: bool ``[h, w]`` tissue mask of the whole slide.
        scale: mask pixels per output pixel.
    """

    def __init__(self, mask: np.ndarray, scale: float) -> None:
        self.scale = scale
        self.shape = mask.shape
        self.table = np.pad(np.asarray(mask, np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def touching(self, layout: TileLayout, at_once: int = 2**22) -> set[tuple[int, int]]:
        """Corners of the layout's tiles (any a chunk's region meets) whose kept box touches tissue:
        every tile at once from the table, a strip of tile rows at a time (bounded memory), instead
        of a Python call per tile (a slide's plan asks about each tile of each chunk). ``at_once``:
        the most tiles looked at together (4M: 32 MB a temporary)."""
        rows = np.array(layout.starts(-layout.margin, layout.height + layout.margin), np.int64)
        cols = np.array(layout.starts(-layout.margin, layout.width + layout.margin), np.int64)
        c0, c1 = self._cells(cols, layout.tile, self.shape[1])
        t, found = self.table, set()
        per_strip = max(1, at_once // max(len(cols), 1))
        for at in range(0, len(rows), per_strip):
            strip = rows[at : at + per_strip]
            r0, r1 = self._cells(strip, layout.tile, self.shape[0])
            sums = t[np.ix_(r1, c1)] - t[np.ix_(r0, c1)] - t[np.ix_(r1, c0)] + t[np.ix_(r0, c0)]
            y, x = np.nonzero((sums > 0) & (r1 > r0)[:, None] & (c1 > c0)[None, :])
            found.update(zip(strip[y].tolist(), cols[x].tolist()))
        return found

    def _cells(self, starts: np.ndarray, tile: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The mask rows (or columns) ``[lo, hi)`` that tiles starting at ``starts`` cover."""
        lo = np.clip(np.floor(starts * self.scale), 0, size).astype(np.int64)
        hi = np.clip(np.ceil((starts + tile) * self.scale), 0, size).astype(np.int64)
        return lo, hi


def nonzero_box(mask: np.ndarray, pad: int = 0) -> tuple[slice, slice] | None:
    """Slices of the bounding box of ``mask``'s nonzero pixels grown by ``pad`` (clipped to the
    array), or None when there are none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    height, width = mask.shape
    return (
        slice(max(int(rows[0]) - pad, 0), min(int(rows[-1]) + 1 + pad, height)),
        slice(max(int(cols[0]) - pad, 0), min(int(cols[-1]) + 1 + pad, width)),
    )
