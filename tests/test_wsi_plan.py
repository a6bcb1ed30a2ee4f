"""The slide plan: which tiles each chunk computes, and which margins its neighbours lend."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from vismtl.wsi.margins import MarginBands
from vismtl.wsi.plan import plan_slide
from vismtl.wsi.stitch import ChunkCanvas
from vismtl.wsi.tiling import TileLayout, TissueIndex

# 3 x 3 chunks of 4 x 4 tiles, all tissue; 64 px margins reach one tile into each neighbour
LAYOUT = TileLayout(height=3072, width=3072, tile=256, stride=256, context=0, chunk=1024, margin=64)
ALL = TissueIndex(np.ones((8, 8), bool), 8 / 3072)


def tiles_of(plan, index):
    first = sum(plan.counts[:index])
    return [tuple(t) for t in plan.positions[first : first + plan.counts[index]].tolist()]


def test_without_sharing_every_chunk_computes_its_whole_region():
    plan = plan_slide(LAYOUT, ALL, {}, 0.5, keep=0)
    assert plan.counts == [25, 30, 25, 30, 36, 30, 25, 30, 25] and plan.shared == 0
    own = tiles_of(plan, 4)[: plan.core_counts[4]]
    assert plan.core_counts[4] == 16 and {LAYOUT.cell_of(*t) for t in own} == {(1, 1)}  # its own tiles first


def test_neighbours_above_and_left_lend_their_margins():
    plan = plan_slide(LAYOUT, ALL, {}, 0.5, keep=8)
    centre = tiles_of(plan, 4)
    # the centre chunk computes its 16 tiles, then the right column and the bottom row (one
    # tile into each later neighbour); the 10 tiles above and to the left are lent
    assert len(centre) == 26 and plan.lenders[4] == (0, 1, 2, 3)
    assert {LAYOUT.cell_of(*t) for t in centre[16:]} == {(1, 2), (2, 0), (2, 1), (2, 2)}
    assert sum(plan.counts) == 200 and plan.shared == 256 - 200  # 256: the counts without sharing
    # every tile of the slide is still computed by its own chunk, exactly once
    computed = Counter(t for i in range(9) for t in tiles_of(plan, i)[: plan.core_counts[i]])
    assert len(computed) == 144 and set(computed.values()) == {1}


def test_a_small_budget_lends_only_from_the_chunks_just_before():
    plan = plan_slide(LAYOUT, ALL, {}, 0.5, keep=1)
    assert plan.lenders[4] == (3,) and plan.lenders[3] == ()  # chunk 3 (left) is one back; 0-2 are too far
    finished = plan_slide(LAYOUT, ALL, {(1, 0): True}, 0.5, keep=8)  # resumed: chunk (1, 0) is not recomputed
    assert (1, 0) not in finished.chunks and all(finished.chunks[j] != (1, 0) for j in finished.lenders[3])
    with pytest.raises(ValueError, match="disjoint"):
        plan_slide(TileLayout(3072, 3072, 256, 128, 0, 1024, 64), ALL, {}, 0.5, keep=8)


def test_bands_give_a_canvas_the_values_its_margin_tiles_would():
    """A canvas filled from its lenders' bands plus its own tiles equals one that ran every tile."""
    plan = plan_slide(LAYOUT, ALL, {}, 0.5, keep=8)
    full = plan_slide(LAYOUT, ALL, {}, 0.5, keep=0)
    generator = torch.Generator().manual_seed(0)
    values = torch.rand((2, 3072 + 512, 3072 + 512), generator=generator)  # a "model": tile = its pixels

    def run(p, bands):
        canvases = []
        for index, chunk in enumerate(p.chunks):
            canvas = ChunkCanvas(LAYOUT.region(*chunk), {"x": 2}, 256, "ones", "cpu", disjoint=True)
            bands.lend(canvas, p.lenders[index])
            tiles = torch.tensor(tiles_of(p, index))
            outputs = torch.stack([values[:, y + 256 : y + 512, x + 256 : x + 512] for y, x in tiles.tolist()])
            canvas.add({"x": outputs}, tiles)
            bands.keep(index, chunk, canvas)
            canvases.append(canvas.result()["x"].clone())
        return canvases

    shared = run(plan, MarginBands(LAYOUT, 8))
    computed = run(full, MarginBands(LAYOUT, 0))
    assert all(torch.equal(a, b) for a, b in zip(shared, computed))
    assert (shared[4] > 0).all()  # the centre's whole region holds values, margins included
