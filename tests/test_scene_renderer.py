"""Tests of the procedural scene renderer: determinism, formats and 3-D consistency."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from vismtl.data.scene_renderer import (
    IGNORE,
    PART_CLASSES,
    SEMSEG_CLASSES,
    render_scene,
)

Sample = dict[str, np.ndarray]
FIGURE = SEMSEG_CLASSES.index("figure")
KEYS = ("image", "semseg", "parts", "depth", "normals", "edge", "saliency", "instances")
_ALL, _HEAD, _TAIL = slice(None), slice(None, -1), slice(1, None)
# (pixel, bottom neighbour) and (pixel, right neighbour) index pairs
NEIGHBOUR_PAIRS = (((_HEAD, _ALL), (_TAIL, _ALL)), ((_ALL, _HEAD), (_ALL, _TAIL)))


@pytest.fixture(scope="module")
def scenes() -> list[Sample]:
    return [render_scene(11, i) for i in range(50)]


def back_project(sample: Sample) -> np.ndarray:
    """Camera-frame 3-D points (H, W, 3): x right, y up, z towards the viewer."""
    fx, fy, cx, cy = sample["intrinsics"].astype(np.float64)
    depth = sample["depth"].astype(np.float64)
    rows, cols = np.indices(depth.shape)
    x, y = (cols - cx) / fx * depth, -(rows - cy) / fy * depth
    return np.stack([x, y, -depth], axis=-1)


def fit_plane(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares plane n . p + dist = 0 through (N, 3) points, origin on +n side."""
    centre = points.mean(axis=0)
    normal = np.linalg.svd(points - centre, full_matrices=False)[2][-1]
    if normal @ centre > 0:
        normal = -normal
    return normal, float(-(normal @ centre))


def test_deterministic_per_seed_and_index() -> None:
    a, b = render_scene(3, 7), render_scene(3, 7)
    for key in (*KEYS, "intrinsics"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], render_scene(3, 8)["image"])
    assert not np.array_equal(a["image"], render_scene(4, 7)["image"])


@pytest.mark.parametrize("size", [(128, 128), (96, 160), (160, 96)])
def test_shapes_dtypes_and_ranges(size: tuple[int, int]) -> None:
    h, w = size
    s = render_scene(0, 1, h, w)
    u8, f32 = np.uint8, np.float32
    expected = {
        "image": ((h, w, 3), u8),
        "semseg": ((h, w), u8),
        "parts": ((h, w), u8),
        "depth": ((h, w), f32),
        "normals": ((h, w, 3), f32),
        "edge": ((h, w), u8),
        "saliency": ((h, w), u8),
        "instances": ((h, w), np.int32),
        "intrinsics": ((4,), f32),
    }
    for key, (shape, dtype) in expected.items():
        assert s[key].shape == shape and s[key].dtype == dtype, key
        assert s[key].flags.c_contiguous, key
    assert np.all(np.isfinite(s["depth"])) and s["depth"].min() > 0
    assert s["semseg"].max() < len(SEMSEG_CLASSES)
    assert set(np.unique(s["edge"])) <= {0, 1}
    assert set(np.unique(s["saliency"])) <= {0, 1}
    fx, fy, cx, cy = s["intrinsics"]
    assert fx == fy and cx == (w - 1) / 2 and cy == (h - 1) / 2
    hfov = math.degrees(2 * math.atan(w / 2 / fx))
    assert 50 <= hfov <= 70


def test_normals_unit_and_facing_the_camera(scenes: list[Sample]) -> None:
    for s in scenes[:20]:
        n = s["normals"].astype(np.float64)
        np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-3)
        # visible surfaces face the camera: the normal points against the viewing ray
        points = back_project(s)
        facing = np.sum(n * points, axis=-1) / np.linalg.norm(points, axis=-1)
        assert facing.max() < 1e-3
        # n_z > 0 is only guaranteed for floor and wall (see the module docstring)
        assert n[..., 2][s["instances"] < 2].min() > -1e-3


def test_floor_and_wall_normals_follow_the_pitch(scenes: list[Sample]) -> None:
    for s in scenes[:20]:
        n, inst = s["normals"], s["instances"]
        floor, wall = n[inst == 1], n[inst == 0]
        assert len(floor) and len(wall)
        # the floor normal is world up: (0, cos p, sin p) for a camera pitched down by p
        sin_p = float(floor[0, 2])
        pitch = math.degrees(math.asin(sin_p))
        assert 5 - 1e-2 <= pitch <= 20 + 1e-2
        cos_p = math.sqrt(1 - sin_p**2)
        np.testing.assert_allclose(floor, [[0, cos_p, sin_p]] * len(floor), atol=1e-5)
        # the wall normal points back along world -Z: (0, -sin p, cos p)
        np.testing.assert_allclose(wall, [[0, -sin_p, cos_p]] * len(wall), atol=1e-5)


def test_depth_back_projects_onto_planes_with_the_labelled_normals(
    scenes: list[Sample],
) -> None:
    for s in scenes[:20]:
        points = back_project(s)
        # dist: camera height above the floor (1.2-1.8 m), distance to the wall (5-10 m)
        for inst_id, (lo, hi) in ((1, (1.2, 1.8)), (0, (5.0, 10.0))):
            mask = s["instances"] == inst_id
            normal, dist = fit_plane(points[mask])
            residual = np.abs(points[mask] @ normal + dist)
            assert residual.max() < 1e-3 * dist
            assert lo - 1e-3 <= dist <= hi + 1e-3
            labelled = s["normals"][mask]
            np.testing.assert_allclose(labelled, [normal] * len(labelled), atol=1e-4)


def test_depth_is_consistent_with_normals_on_objects(scenes: list[Sample]) -> None:
    """Neighbouring points of one smooth surface differ by a vector tangent to it.

    For spheres, cylinder sides and planes the chord between two surface points is
    exactly orthogonal to the sum of their normals; cones deviate to second order.
    """
    checked = 0
    for s in scenes:
        points, n = back_project(s), s["normals"].astype(np.float64)
        inst, parts = s["instances"], s["parts"]
        for a, b in NEIGHBOUR_PAIRS:
            same = (inst[a] == inst[b]) & (inst[a] >= 2) & (parts[a] == parts[b])
            # skip pairs across box edges and cap rims
            smooth = same & (np.sum(n[a] * n[b], axis=-1) > 0.995)
            chord, nsum = points[b] - points[a], n[a] + n[b]
            norms = np.linalg.norm(chord, axis=-1) * np.linalg.norm(nsum, axis=-1)
            cosine = np.abs(np.sum(chord * nsum, axis=-1)) / norms
            assert cosine[smooth].max(initial=0.0) < 2e-2
            checked += int(smooth.sum())
    assert checked > 10_000


def test_edges_saliency_and_parts_follow_the_maps(scenes: list[Sample]) -> None:
    for s in scenes:
        inst, sem, parts = s["instances"], s["semseg"], s["parts"]
        edge = np.zeros(inst.shape, dtype=bool)
        for a, b in NEIGHBOUR_PAIRS:
            edge[a] |= inst[a] != inst[b]
        np.testing.assert_array_equal(s["edge"], edge)
        np.testing.assert_array_equal(s["saliency"], sem >= 2)
        np.testing.assert_array_equal(sem == 0, inst == 0)
        np.testing.assert_array_equal(sem == 1, inst == 1)
        for i in np.unique(inst):
            assert len(np.unique(sem[inst == i])) == 1  # one class per instance
        figure = sem == FIGURE
        if not figure.any():
            assert np.all(parts == IGNORE)
        else:
            np.testing.assert_array_equal(parts > 0, figure)
            assert parts.max() < len(PART_CLASSES)
            assert len(np.unique(inst[figure])) == 1  # one figure, one instance


def test_every_class_and_part_appears(scenes: list[Sample]) -> None:
    classes = set().union(*(np.unique(s["semseg"]).tolist() for s in scenes))
    assert classes == set(range(len(SEMSEG_CLASSES)))
    with_figure = [s for s in scenes if s["parts"][0, 0] != IGNORE]
    assert 10 <= len(with_figure) <= 40  # figures appear in about half of the scenes
    parts = set().union(*(np.unique(s["parts"]).tolist() for s in with_figure))
    assert parts == set(range(len(PART_CLASSES)))
    # the head is above the torso, which is above the legs
    for s in with_figure:
        rows = [np.nonzero(s["parts"] == p)[0] for p in (1, 2, 3)]
        if all(len(r) > 20 for r in rows):
            assert rows[0].mean() < rows[1].mean() < rows[2].mean()


def test_image_is_neither_flat_nor_saturated(scenes: list[Sample]) -> None:
    for s in scenes[:10]:
        image = s["image"].astype(np.float64)
        assert 10 < image.mean() < 245 and image.std() > 5
        assert np.abs(np.diff(image, axis=1)).mean() > 0.3  # sensor noise, texture


def test_speed() -> None:
    for i in range(10):
        render_scene(1, i)
    count, start = 100, time.perf_counter()
    for i in range(count):
        render_scene(2, i)
    rate = count / (time.perf_counter() - start)
    assert rate > 100, f"{rate:.0f} samples/s"  # ~800/s on one core; loose for CI
