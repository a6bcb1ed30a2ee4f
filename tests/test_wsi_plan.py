"""The slide plan and the tile cache: which tiles each chunk computes, and which it takes from earlier chunks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from vismtl.wsi.plan import plan_slide
from vismtl.wsi.stitch import ChunkCanvas
from vismtl.wsi.tile_cache import TileCache
from vismtl.wsi.tiling import TileLayout, TissueIndex

# 3 x 3 chunks of 4 x 4 tiles, all tissue; 64 px margins reach one tile into each neighbour
LAYOUT = TileLayout(height=3072, width=3072, tile=256, stride=256, context=0, chunk=1024, margin=64)
ALL = TissueIndex(np.ones((8, 8), bool), 8 / 3072)
CHANNELS = 2
PIXEL_BYTES = 4 * CHANNELS
WITHOUT_CACHE = [25, 30, 25, 30, 36, 30, 25, 30, 25]  # the region's tiles: own 16 and the ring's


def computed(plan, index):
    first = sum(plan.counts[:index])
    return [tuple(t) for t in plan.positions[first : first + plan.counts[index]].tolist()]


def test_without_a_cache_every_chunk_computes_its_whole_region():
    plan = plan_slide(LAYOUT, ALL, {}, 0.5)
    assert plan.counts == WITHOUT_CACHE and plan.shared == 0 and not plan.kept


def test_with_a_cache_every_tile_is_computed_once():
    plan = plan_slide(LAYOUT, ALL, {}, 0.5, cache_bytes=2**30, pixel_bytes=PIXEL_BYTES)
    everything = Counter(tuple(t) for t in plan.positions.tolist())
    assert len(everything) == 144 and set(everything.values()) == {1}  # the 12 x 12 tiles, once each
    assert plan.shared == sum(WITHOUT_CACHE) - 144
    for i, chunk in enumerate(plan.chunks):  # each chunk still gets its whole region: computed + taken
        region = {t for t in LAYOUT.tiles(LAYOUT.region(*chunk)) if min(t) >= 0 and max(t) < 3072}
        got = computed(plan, i) + [corner for corner, _ in plan.taken[i]]
        assert len(got) == len(region) and set(got) == region
    # the cache holds about one row of chunks' worth of parts, not the slide
    assert 0 < plan.peak_bytes < 3 * 12 * 256 * 256 * PIXEL_BYTES
    # each kept tile is released by the last chunk that takes it
    last = Counter(corner for taken in plan.taken for corner, is_last in taken if is_last)
    assert set(last.values()) == {1} and len(last) == len(plan.kept)


def test_a_small_cache_computes_again_what_does_not_fit():
    budget = 10 * 256 * 256 * PIXEL_BYTES  # the whole slide's peak is 23 tiles
    plan = plan_slide(LAYOUT, ALL, {}, 0.5, cache_bytes=budget, pixel_bytes=PIXEL_BYTES)
    assert 144 < sum(plan.counts) < sum(WITHOUT_CACHE) and plan.peak_bytes <= budget
    # a resumed run: the finished chunk's tiles that its neighbours need are computed by one of them, once
    resumed = plan_slide(LAYOUT, ALL, {(1, 1): True}, 0.5, cache_bytes=2**30, pixel_bytes=PIXEL_BYTES)
    counted = Counter(tuple(t) for t in resumed.positions.tolist())
    assert (1, 1) not in resumed.chunks and set(counted.values()) == {1}
    assert (1024, 1024) in counted and (1280, 1280) not in counted  # the centre's ring tile; its inner tile
    with pytest.raises(ValueError, match="disjoint"):
        plan_slide(TileLayout(3072, 3072, 256, 128, 0, 1024, 64), ALL, {}, 0.5, cache_bytes=1, pixel_bytes=1)


def run_plan(plan, values, classes):
    """The engine's loop with a "model" whose tiles are ``values``' pixels and whose class is ``classes``'."""
    cache, canvases, votes = TileCache(256), [], []
    for index, chunk in enumerate(plan.chunks):
        canvas = ChunkCanvas(LAYOUT.region(*chunk), {"x": CHANNELS}, 256, "ones", "cpu", disjoint=True)
        core = LAYOUT.core(*chunk)
        counted = Counter()
        for corner, last in plan.taken[index]:
            patch = cache.take(canvas, corner, last)
            if (corner[0] // 1024, corner[1] // 1024) == chunk:  # a tile of its own cell
                counted[int(patch["tissue"])] += 1
        first = sum(plan.counts[:index])
        for k, (y, x) in enumerate(computed(plan, index)):
            output = values[:, y + 256 : y + 512, x + 256 : x + 512]
            canvas.add({"x": output[None]}, torch.tensor([[y, x]]))
            label = classes[(y + 256) // 256, (x + 256) // 256]
            if core[0] <= y < core[2] and core[1] <= x < core[3]:
                counted[int(label)] += 1
            if first + k in plan.kept:
                cache.keep((y, x), plan.kept[first + k], output, {"tissue": label})
        canvases.append(canvas.result()["x"].clone())
        votes.append(counted)
    assert len(cache) == 0  # everything kept was taken
    return canvases, votes


def test_tiles_taken_from_the_cache_give_what_computing_them_would():
    """Canvases (margins included) and the tissue-class votes equal those of computing every tile."""
    generator = torch.Generator().manual_seed(0)
    values = torch.rand((CHANNELS, 3072 + 512, 3072 + 512), generator=generator)
    classes = torch.randint(0, 4, (14, 14), generator=generator)
    full = run_plan(plan_slide(LAYOUT, ALL, {}, 0.5), values, classes)
    for budget in (2**30, 10 * 256 * 256 * PIXEL_BYTES):
        cached = run_plan(
            plan_slide(LAYOUT, ALL, {}, 0.5, cache_bytes=budget, pixel_bytes=PIXEL_BYTES), values, classes
        )
        assert all(torch.equal(a, b) for a, b in zip(cached[0], full[0]))
        assert cached[1] == full[1] and sum(sum(v.values()) for v in full[1]) == 144  # each tile voted once
    assert all((canvas > 0).all() for canvas in full[0][4:5])  # the centre's whole region holds values


@pytest.mark.parametrize(
    "height, width, tile, stride, margin, mask_side",
    [(3000, 2100, 256, 256, 64, 37), (1500, 1700, 96, 64, 48, 301), (640, 900, 128, 32, 16, 23)],
)
def test_the_tiles_touching_tissue_are_those_whose_box_meets_a_tissue_pixel(
    height, width, tile, stride, margin, mask_side
):
    """TissueIndex.touching, every tile at once, against each tile's box cut out of the mask (tiles
    over the slide's edge and, with a stride under the tile, starting before it included)."""
    rng = np.random.default_rng(height)
    mask = rng.random((mask_side, mask_side * width // height + 1)) > 0.97
    layout = TileLayout(height, width, tile, stride, 0, stride * 4, margin)
    scale = mask.shape[0] / height
    expected = set()
    for y, x in layout.tiles((-margin, -margin, height + margin, width + margin)):
        r0, r1 = (min(max(f(v * scale), 0), mask.shape[0]) for f, v in ((np.floor, y), (np.ceil, y + tile)))
        c0, c1 = (min(max(f(v * scale), 0), mask.shape[1]) for f, v in ((np.floor, x), (np.ceil, x + tile)))
        if mask[int(r0) : int(r1), int(c0) : int(c1)].any():
            expected.add((y, x))
    assert min(min(corner) for corner in expected) < (0 if stride < tile else stride)  # tiles at the edge
    tissue = TissueIndex(mask, scale)
    assert tissue.touching(layout) == expected
    assert tissue.touching(layout, at_once=7) == expected  # a strip of a row or a few at a time
