"""Margin bands lent from one chunk's canvas to its later neighbours (the sharing of :mod:`vismtl.wsi.plan`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vismtl.wsi.stitch import ChunkCanvas
from vismtl.wsi.tiling import Box, TileLayout


class MarginBands:
    """What later chunks' margins take from finished canvases instead of computing their tiles.

    Once a chunk's tiles are all in its canvas, :meth:`keep` copies the bottom and right bands
    of its cell, ``margin`` pixels wide: the pixels of it that the regions of the chunks below
    and to the right hold. :meth:`lend` copies into a new canvas what its lenders kept over its
    region. A band is dropped once no chunk within ``keep`` of the plan's order can ask for it,
    so memory holds at most ``keep`` chunks' bands (the budget of :func:`bands_kept`).
    """

    def __init__(self, layout: TileLayout, keep: int) -> None:
        self.layout, self.chunks_kept = layout, keep
        self._bands: dict[int, list[tuple[Box, torch.Tensor]]] = {}

    def keep(self, index: int, chunk: tuple[int, int], canvas: ChunkCanvas) -> None:
        """Keep chunk ``index``'s bands (its canvas is complete); drop those no later chunk may lend."""
        if not self.chunks_kept:
            return
        for old in [j for j in self._bands if j <= index - self.chunks_kept]:
            del self._bands[old]
        y0, x0, y1, x1 = cell = self.layout.cell(*chunk)
        margin = self.layout.margin
        bands = []
        for strip in ((y1 - margin, x0, y1, x1), (y0, x1 - margin, y1, x1)):
            box = intersect(intersect(strip, cell), canvas.region)
            if box is not None:
                bands.append((box, canvas.sums[(slice(None), *within(box, canvas.region))].clone()))
        self._bands[index] = bands

    def lend(self, canvas: ChunkCanvas, lenders: Sequence[int]) -> None:
        """Copy the lenders' bands into ``canvas`` where they meet its region."""
        if lenders and not canvas.copy:
            raise ValueError("margins are lent only to canvases of disjoint tiles")
        for index in lenders:
            for box, values in self._bands[index]:
                common = intersect(box, canvas.region)
                if common is not None:
                    canvas.sums[(slice(None), *within(common, canvas.region))] = values[
                        (slice(None), *within(common, box))
                    ]


def bands_kept(layout: TileLayout, channels: int, budget_mb: float) -> int:
    """How many chunks' bands fit in ``budget_mb`` (float32 ``channels``: two bands per chunk)."""
    band_bytes = 2 * layout.margin * layout.chunk * channels * 4
    return int(budget_mb * 2**20 // band_bytes) if band_bytes else 0


def intersect(a: Box, b: Box) -> Box | None:
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[0] < box[2] and box[1] < box[3] else None


def within(box: Box, outer: Box) -> tuple[slice, slice]:
    """Slices of ``box`` in an array covering ``outer``."""
    return slice(box[0] - outer[0], box[2] - outer[0]), slice(box[1] - outer[1], box[3] - outer[1])
