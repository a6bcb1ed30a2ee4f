"""label_outlines / label_stats: every object's outline at once, the same as the OpenCV oracle's one by one
(tests/outline_reference.py: the former per-object implementation, imported here as polygon_from_mask)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import shapely
from scipy import ndimage
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient
from skimage.draw import ellipse

from outline_reference import lattice_contours, ring_of
from outline_reference import reference_polygon as polygon_from_mask
from vismtl.wsi.outlines import label_outlines, label_stats

SHAPES = [(1, 1), (1, 7), (7, 1), (5, 3), (17, 23), (64, 64)]


def _canonical(ring) -> list[tuple[float, float]]:
    """Closed ring -> open vertex list starting at its smallest (y, x) vertex."""
    points = [(float(x), float(y)) for x, y in ring[:-1]]
    i = min(range(len(points)), key=lambda j: (points[j][1], points[j][0]))
    return points[i:] + points[:i]


def _rings(labels: np.ndarray) -> dict[int, np.ndarray]:
    ids, offsets, vertices = label_outlines(labels)
    assert ids.dtype == offsets.dtype == np.int64 and vertices.dtype == np.float64
    assert offsets[0] == 0 and offsets[-1] == len(vertices) and np.all(np.diff(ids) > 0)
    return {int(k): vertices[offsets[i] : offsets[i + 1]] for i, k in enumerate(ids)}


def _choices(mask: np.ndarray) -> list[list[tuple[float, float]]]:
    """Every ring polygon_from_mask could return had its ties gone another way: all contours of the
    largest OpenCV area, and of each, all pieces of the largest area (polygon_from_mask's own steps)."""
    contours, lattice = lattice_contours(mask)
    top = max(cv2.contourArea(c) for c in contours)
    choices = []
    for contour in [c for c in contours if cv2.contourArea(c) == top]:
        polygon = Polygon(ring_of(contour, lattice))
        parts = [polygon] if polygon.is_valid else list(shapely.get_parts(shapely.make_valid(polygon)))
        parts = [p for p in parts if isinstance(p, Polygon) and p.area > 0]
        largest = max(p.area for p in parts)
        choices += [_canonical(orient(Polygon(p.exterior), 1.0).exterior.coords) for p in parts if p.area == largest]
    return choices


def _check_against_polygon_from_mask(labels: np.ndarray) -> tuple[int, int]:
    """Every label's ring is polygon_from_mask's (up to the start vertex), or where that one came from a
    tie, one of the tied rings. Returns (labels, ties)."""
    rings = _rings(labels)
    assert sorted(rings) == [int(k) for k in np.unique(labels) if k > 0]
    ties = 0
    for k, ring in rings.items():
        mine = _canonical(ring)
        assert [tuple(v) for v in ring[:-1].tolist()] == mine  # starts at the smallest (y, x) vertex
        assert tuple(ring[0]) == tuple(ring[-1])
        reference = _canonical(polygon_from_mask(labels == k))
        choices = _choices(labels == k)
        assert reference in choices  # the helper reproduces polygon_from_mask
        if len(choices) == 1:
            assert mine == reference, f"label {k}"
        else:
            assert mine in choices, f"label {k}"
            ties += 1
    return len(rings), ties


def _blobs(rng: np.random.Generator, shape: tuple[int, int], count: int) -> np.ndarray:
    """Overlapping ellipses: later ones cut earlier ones into pieces, touch them, and the image border."""
    labels = np.zeros(shape, np.int32)
    for k in range(1, count + 1):
        centre = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        radii = rng.uniform(1, max(shape) / 3, size=2)
        labels[ellipse(*centre, *radii, shape=shape, rotation=rng.uniform(0, np.pi))] = k
    return labels


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_labels_match_polygon_from_mask(shape, seed):
    """Random labels: many pieces per label, diagonal contacts, holes with other labels inside them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2 + seed, size=shape) * rng.integers(1, 4)  # seed 0: one label, then more
    count, ties = _check_against_polygon_from_mask(labels)
    assert ties < count or count <= 1


@pytest.mark.parametrize("shape", SHAPES[3:])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_and_blob_labels_match_polygon_from_mask(shape, seed):
    rng = np.random.default_rng(10 + seed)
    sparse = (rng.random(shape) < 0.45).astype(np.uint8)  # one label of many diagonally linked pieces
    _check_against_polygon_from_mask(sparse)
    count, ties = _check_against_polygon_from_mask(_blobs(rng, shape, 12))
    assert ties < count


def test_many_small_images_match_polygon_from_mask():
    rng = np.random.default_rng(7)
    count = ties = 0
    for _ in range(150):
        shape = tuple(rng.integers(1, 21, size=2))
        labels = rng.integers(0, rng.integers(2, 6), size=shape)
        if rng.random() < 0.5:
            labels = labels * (rng.random(shape) < 0.6)  # more background, more diagonal contacts
        found, tied = _check_against_polygon_from_mask(labels)
        count, ties = count + found, ties + tied
    assert ties < count / 4


def test_objects_in_holes_and_on_the_border():
    labels = np.zeros((9, 10), np.int64)
    labels[1:8, 1:8] = 1
    labels[3:6, 3:6] = 2  # in the hole of 1
    labels[4, 4] = 0  # a hole in 2
    labels[:, 8:] = 3  # touches 1 and the border
    labels[0, 0] = labels[8, 9] = 4  # two corner pixels
    _check_against_polygon_from_mask(labels)
    rings = _rings(labels)
    assert _canonical(rings[1]) == [(1.0, 1.0), (8.0, 1.0), (8.0, 8.0), (1.0, 8.0)]  # hole ignored
    assert _canonical(rings[2]) == [(3.0, 3.0), (6.0, 3.0), (6.0, 6.0), (3.0, 6.0)]


def test_hand_made_rings():
    one = np.zeros((3, 4), np.uint16)
    one[1, 2] = 5
    assert _rings(one)[5].tolist() == [[2, 1], [3, 1], [3, 2], [2, 2], [2, 1]]
    ell = np.array([[1, 0], [1, 1]])
    assert _rings(ell)[1].tolist() == [[0, 0], [1, 0], [1, 1], [2, 1], [2, 2], [0, 2], [0, 0]]
    # Pixels touching at a corner are separate pieces; of equal ones the first in raster order is kept.
    assert _rings(np.eye(2, dtype=int))[1].tolist() == [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
    assert _rings(np.eye(2, dtype=int)[::-1])[1].tolist() == [[1, 0], [2, 0], [2, 1], [1, 1], [1, 0]]
    # Separate equal pieces: the last in raster order (OpenCV's contour order, as polygon_from_mask).
    apart = np.array([[1, 0, 1]])
    assert _rings(apart)[1].tolist() == [[2, 0], [3, 0], [3, 1], [2, 1], [2, 0]]
    assert _canonical(polygon_from_mask(apart == 1)) == _canonical(_rings(apart)[1])
    # As in polygon_from_mask, diagonal contacts that enclose a hole make one outline around it.
    plus = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    assert len(_rings(plus)[1]) == 13 and Polygon(_rings(plus)[1]).area == 5
    # Equal areas: the more jagged outline has the larger OpenCV contour area (polygon_from_mask's choice).
    ell_and_bar = np.array([[1, 1, 0, 1, 1, 1], [0, 1, 0, 0, 0, 0]])
    assert _canonical(_rings(ell_and_bar)[1]) == [
        (0.0, 0.0),
        (2.0, 0.0),
        (2.0, 2.0),
        (1.0, 2.0),
        (1.0, 1.0),
        (0.0, 1.0),
    ]
    _check_against_polygon_from_mask(ell_and_bar)


@pytest.mark.parametrize("seed", [0, 1])
def test_rings_are_valid_closed_and_minimal(seed):
    rng = np.random.default_rng(20 + seed)
    labels = rng.integers(0, 4, size=(40, 50)) * (rng.random((40, 50)) < 0.8)
    rows, cols = np.indices(labels.shape)
    for k, ring in _rings(labels).items():
        assert tuple(ring[0]) == tuple(ring[-1]) and len(ring) >= 5
        polygon = Polygon(ring)
        x, y = ring[:, 0], ring[:, 1]
        assert polygon.is_valid and (x[:-1] * y[1:] - x[1:] * y[:-1]).sum() > 0  # positive shoelace area
        before, after = ring[1:-1] - ring[:-2], np.roll(ring[1:], -1, axis=0)[:-1] - ring[1:-1]
        assert np.all(before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0])  # turning vertices only
        inside = shapely.contains_xy(polygon, cols + 0.5, rows + 0.5)
        assert polygon.area == inside.sum()  # follows pixel edges
        if np.all(labels[inside] == k):  # no holes: the area is the piece's pixel count
            pieces, _ = ndimage.label(labels == k)
            assert inside.sum() == (pieces == pieces[inside][0]).sum()


def test_empty_and_bad_input():
    ids, offsets, vertices = label_outlines(np.zeros((4, 5), np.int32))
    assert ids.shape == (0,) and offsets.tolist() == [0] and vertices.shape == (0, 2)
    with pytest.raises(TypeError):
        label_outlines(np.ones((3, 3), np.float32))
    labels = np.random.default_rng(0).integers(0, 3, size=(9, 8))
    flipped = _rings(labels[::-1, ::2])  # a non-contiguous view
    assert all(np.array_equal(flipped[k], r) for k, r in _rings(np.ascontiguousarray(labels[::-1, ::2])).items())


@pytest.mark.parametrize("seed", [0, 1])
def test_label_stats_matches_per_label_numpy(seed):
    rng = np.random.default_rng(seed)
    labels = _blobs(rng, (31, 45), 10).astype(np.int64) * 1000003  # large, sparse ids
    labels[rng.random(labels.shape) < 0.05] = 7  # a scattered label
    present = np.unique(labels[labels > 0])
    ids = np.sort(np.concatenate([present[::2], [5]]))  # some labels left out, one id absent
    area, centroid, first = label_stats(labels, ids)
    assert area.dtype == first.dtype == np.int64 and centroid.shape == (ids.size, 2)
    for i, k in enumerate(ids):
        rows, cols = np.nonzero(labels == k)
        assert area[i] == rows.size
        if rows.size == 0:
            assert np.isnan(centroid[i]).all() and first[i].tolist() == [-1, -1]
            continue
        assert np.allclose(centroid[i], [cols.mean() + 0.5, rows.mean() + 0.5], rtol=0, atol=1e-9)
        assert first[i].tolist() == [rows[0], cols[0]]


def test_label_stats_of_a_crop_with_its_offset_equal_those_of_the_whole_array():
    rng = np.random.default_rng(3)
    labels = np.zeros((300, 400), np.int32)
    crop = rng.integers(0, 50, (90, 130)).astype(np.int32)
    crop[rng.random(crop.shape) < 0.5] = 0
    labels[123:213, 217:347] = crop
    ids = np.unique(crop[crop > 0])
    whole = label_stats(labels, ids)
    shifted = label_stats(crop, ids, offset=(123, 217))
    for a, b in zip(whole, shifted):
        assert a.dtype == b.dtype and np.array_equal(a, b)  # to the last bit: integer sums, one division
