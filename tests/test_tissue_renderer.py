"""Tests of the procedural H&E tile renderer: determinism, formats, label consistency, cues."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label

from vismtl.data.tissue_renderer import GLAND_TYPES, NUCLEUS_TYPES, TISSUE_CLASSES, render_tissue

Sample = dict[str, np.ndarray | int]
INSTANCE_KEYS = ("nuclei_inst", "gland_inst", "lumen_inst")
MAP_KEYS = (*INSTANCE_KEYS, "nuclei_type", "gland_type")
NUM_TILES = 63  # 7 blocks of 9 indices: every tissue class 7 times


@pytest.fixture(scope="module")
def tiles() -> list[Sample]:
    return [render_tissue(5, i) for i in range(NUM_TILES)]


def per_instance(values: np.ndarray, inst: np.ndarray, reduce) -> np.ndarray:
    ids = np.arange(1, inst.max() + 1)
    return np.asarray(reduce(values, inst, ids))


def test_deterministic_per_seed_and_index() -> None:
    a, b = render_tissue(3, 7), render_tissue(3, 7)
    for key in ("image", *MAP_KEYS):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["tissue_class"] == b["tissue_class"]
    assert not np.array_equal(a["image"], render_tissue(3, 8)["image"])
    assert not np.array_equal(a["image"], render_tissue(4, 7)["image"])


@pytest.mark.parametrize("size", [(256, 256), (160, 288)])
def test_shapes_and_dtypes(size: tuple[int, int]) -> None:
    h, w = size
    for index in range(9):  # one tile of every class
        s = render_tissue(0, index, h, w)
        assert s["image"].shape == (h, w, 3) and s["image"].dtype == np.uint8
        for key in INSTANCE_KEYS:
            assert s[key].shape == (h, w) and s[key].dtype == np.int32, key
        for key in ("nuclei_type", "gland_type"):
            assert s[key].shape == (h, w) and s[key].dtype == np.uint8, key
        assert isinstance(s["tissue_class"], int) and 0 <= s["tissue_class"] < len(TISSUE_CLASSES)


def test_instances_are_contiguous_connected_and_large_enough(tiles: list[Sample]) -> None:
    for s in tiles:
        for key in INSTANCE_KEYS:
            inst = s[key]
            k = int(inst.max())
            np.testing.assert_array_equal(np.unique(inst), np.arange(k + 1), err_msg=key)
            # regions of equal id: exactly one per id means every instance is connected
            assert label(inst, background=0, connectivity=1).max() == k, key
            assert k == 0 or np.bincount(inst.ravel())[1:].min() >= 10, key


def test_nucleus_types_follow_the_instances(tiles: list[Sample]) -> None:
    for s in tiles:
        inst, types = s["nuclei_inst"], s["nuclei_type"].astype(np.int64)
        np.testing.assert_array_equal(types > 0, inst > 0)
        assert types.max() < len(NUCLEUS_TYPES)
        if inst.max():
            lo, hi = per_instance(types, inst, ndimage.minimum), per_instance(types, inst, ndimage.maximum)
            np.testing.assert_array_equal(lo, hi)


def test_glands_hold_the_lumina_and_carry_one_type(tiles: list[Sample]) -> None:
    for s in tiles:
        gland, gtype, lumen = s["gland_inst"], s["gland_type"].astype(np.int64), s["lumen_inst"]
        np.testing.assert_array_equal(gtype > 0, gland > 0)
        assert gtype.max() < len(GLAND_TYPES)
        assert not np.any((lumen > 0) & (gland == 0))
        if gland.max():
            lo, hi = per_instance(gtype, gland, ndimage.minimum), per_instance(gtype, gland, ndimage.maximum)
            np.testing.assert_array_equal(lo, hi)
            # surface-epithelium bands have no lumen; every lumen lies in one gland
            assert not np.any((lumen > 0) & (gtype == 2))
        for i in range(1, lumen.max() + 1):
            assert np.unique(gland[lumen == i]).size == 1


def test_every_class_and_type_occurs_and_classes_are_balanced(tiles: list[Sample]) -> None:
    classes = np.bincount([s["tissue_class"] for s in tiles], minlength=len(TISSUE_CLASSES))
    np.testing.assert_array_equal(classes, NUM_TILES // len(TISSUE_CLASSES))
    nucleus_types = set().union(*(np.unique(s["nuclei_type"]).tolist() for s in tiles))
    assert nucleus_types == set(range(len(NUCLEUS_TYPES)))
    gland_types = set().union(*(np.unique(s["gland_type"]).tolist() for s in tiles))
    assert gland_types == set(range(len(GLAND_TYPES)))


def test_content_matches_the_tissue_class(tiles: list[Sample]) -> None:
    """The cues a model needs: glands in epithelium tiles, cell mix in the others."""
    lym, con, neu = (NUCLEUS_TYPES.index(t) for t in ("lymphocyte", "connective", "neutrophil"))
    for s in tiles:
        name = TISSUE_CLASSES[s["tissue_class"]]
        type_of = np.zeros(s["nuclei_inst"].max() + 1, np.int64)  # nucleus id -> type
        type_of[s["nuclei_inst"].ravel()] = s["nuclei_type"].ravel()
        counts = np.bincount(type_of[1:], minlength=len(NUCLEUS_TYPES))
        if name == "background":
            assert counts.sum() == 0 and s["gland_inst"].max() == 0
        elif name in ("normal epithelium", "abnormal epithelium"):
            assert np.any(s["gland_type"] == 1) and np.any(s["lumen_inst"] > 0), name
        elif name == "inflammatory":
            assert counts.argmax() == lym and counts[lym] > 60
        elif name in ("muscle", "stroma", "adipose"):
            assert counts.argmax() == con and s["gland_inst"].max() == 0, name
        elif name == "debris":
            assert counts.argmax() == neu


def test_nuclei_are_dark_and_blue_lumina_bright(tiles: list[Sample]) -> None:
    nuclei, stroma, lumen, epithelium = [], [], [], []
    for s in tiles:
        image, labelled = s["image"], (s["nuclei_inst"] > 0) | (s["gland_inst"] > 0)
        nuclei.append(image[s["nuclei_inst"] > 0])
        lumen.append(image[s["lumen_inst"] > 0])
        epithelium.append(image[(s["gland_inst"] > 0) & (s["lumen_inst"] == 0) & (s["nuclei_inst"] == 0)])
        if TISSUE_CLASSES[s["tissue_class"]] in ("stroma", "muscle", "inflammatory", "normal epithelium"):
            stroma.append(image[~labelled])
    nuc, stro, lum, epi = (np.concatenate(p).astype(np.float64) for p in (nuclei, stroma, lumen, epithelium))
    assert nuc.mean() < stro.mean() - 40
    assert (nuc[:, 2] - nuc[:, 0]).mean() > (stro[:, 2] - stro[:, 0]).mean() + 30
    assert lum.mean() > max(nuc.mean(), stro.mean(), epi.mean()) + 20


def test_speed() -> None:
    render_tissue(0, 0)
    count, start = 45, time.perf_counter()
    for i in range(count):
        render_tissue(1, i)
    rate = count / (time.perf_counter() - start)
    assert rate > 20, f"{rate:.0f} tiles/s"  # ~110/s on one core; loose for CI
