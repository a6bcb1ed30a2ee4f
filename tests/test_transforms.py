"""Augmentation keeps every target consistent: flips, zooms, crops and padding."""

from __future__ import annotations

import numpy as np
import pytest

from vismtl.data.scene_renderer import render_scene
from vismtl.data.transforms import Pipeline, RandomCrop

KINDS = {"semseg": "label", "depth": "depth", "normals": "normals", "edge": "label"}


def scene(height=96, width=128, index=3):
    raw = render_scene(0, index, height, width)
    return {k: raw[k] for k in ("image", "semseg", "depth", "normals", "edge")}, raw["intrinsics"]


def normals_from_depth(depth: np.ndarray, intrinsics: np.ndarray, step: int = 1) -> np.ndarray:
    """Unit normals [H, W, 3] of the surface the depth map describes (camera frame: x right, y up, z to viewer).

    Central differences over ``step`` pixels (wider than the blocks a nearest-neighbour zoom makes).
    """
    fx, fy, cx, cy = intrinsics
    rows, cols = np.mgrid[0 : depth.shape[0], 0 : depth.shape[1]].astype(np.float64)
    points = np.stack([(cols - cx) / fx * depth, -(rows - cy) / fy * depth, -depth], axis=-1)
    du, dv = np.zeros_like(points), np.zeros_like(points)
    du[:, step:-step] = points[:, 2 * step :] - points[:, : -2 * step]
    dv[step:-step] = points[2 * step :] - points[: -2 * step]
    normal = np.cross(dv, du)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-12
    facing = np.sum(normal * points, axis=-1, keepdims=True) > 0  # must point back to the camera
    return np.where(facing, -normal, normal)


def smooth_interior(labels: np.ndarray, margin: int = 2) -> np.ndarray:
    """Pixels whose (2*margin+1)^2 neighbourhood has a single label (away from depth edges)."""
    from scipy.ndimage import maximum_filter, minimum_filter

    size = 2 * margin + 1
    return maximum_filter(labels, size) == minimum_filter(labels, size)


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1, 1)))


def test_rendered_scene_normals_agree_with_depth():
    sample, intrinsics = scene()
    interior = smooth_interior(render_scene(0, 3, 96, 128)["instances"])
    error = angle_deg(normals_from_depth(sample["depth"], intrinsics), sample["normals"])[interior]
    assert np.median(error) < 1.0


def test_flip_negates_normals_x_and_stays_consistent_with_depth():
    """Normals computed from the flipped depth match the flipped normals (and would not without the x flip)."""
    sample, (fx, fy, cx, cy) = scene()
    instances = render_scene(0, 3, 96, 128)["instances"]
    out = Pipeline([dict(type="HorizontalFlip", p=1.0)], KINDS)(dict(sample), seed=0)
    np.testing.assert_array_equal(out["semseg"], sample["semseg"][:, ::-1])
    np.testing.assert_array_equal(out["depth"], sample["depth"][:, ::-1])
    np.testing.assert_allclose(out["normals"][..., 0], -sample["normals"][:, ::-1, 0])
    np.testing.assert_allclose(out["normals"][..., 1:], sample["normals"][:, ::-1, 1:])
    flipped_intrinsics = np.array([fx, fy, 127 - cx, cy])
    interior = smooth_interior(instances[:, ::-1])
    from_depth = normals_from_depth(out["depth"], flipped_intrinsics)
    assert np.median(angle_deg(from_depth, out["normals"])[interior]) < 1.0
    unflipped_x = out["normals"] * np.array([-1.0, 1.0, 1.0])
    # Side faces (|n_x| large) would be off by far more than the tolerance without the rule.
    sides = interior & (np.abs(out["normals"][..., 0]) > 0.3)
    assert sides.sum() > 20
    assert np.median(angle_deg(from_depth, unflipped_x)[sides]) > 30


@pytest.mark.parametrize("seed", range(4))
def test_zoom_divides_depth_and_keeps_labels_nearest(seed):
    sample, _ = scene()
    out = Pipeline([dict(type="RandomScale", scale_limit=(-0.5, 1.0), p=1.0)], KINDS)(dict(sample), seed=seed)
    zoom_y, zoom_x = out["image"].shape[0] / 96, out["image"].shape[1] / 128
    zoom = np.sqrt(zoom_y * zoom_x)  # shapes are rounded: the two axes differ slightly
    assert out["image"].shape[:2] == out["depth"].shape == out["semseg"].shape
    # Nearest interpolation: every output value is an input value, divided by the zoom for depth.
    assert set(np.unique(out["semseg"])) <= set(np.unique(sample["semseg"]))
    assert set(np.unique(out["edge"])) <= {0, 1}
    # Every output depth times the zoom is one of the input depths (nearest, then divided).
    source = np.sort(sample["depth"].ravel())
    rescaled = out["depth"].ravel() * zoom
    nearest = source[np.clip(np.searchsorted(source, rescaled), 0, source.size - 1)]
    below = source[np.clip(np.searchsorted(source, rescaled) - 1, 0, source.size - 1)]
    gap = np.minimum(np.abs(nearest - rescaled), np.abs(below - rescaled)) / rescaled
    assert gap.max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(out["normals"], axis=-1), 1.0, atol=1e-3)


def test_pad_fills_each_kind_with_its_invalid_value():
    sample, _ = scene(40, 50)
    out = Pipeline([dict(type="Pad", size=(48, 64), image_fill=7)], KINDS)(dict(sample), seed=0)
    assert out["image"].shape == (48, 64, 3) and out["normals"].shape == (48, 64, 3)
    assert (out["image"][40:] == 7).all() and (out["image"][:, 50:] == 7).all()
    assert (out["semseg"][40:] == 255).all() and (out["edge"][:, 50:] == 255).all()
    assert (out["depth"][40:] == 0).all() and (out["normals"][:, 50:] == 0).all()
    np.testing.assert_array_equal(out["depth"][:40, :50], sample["depth"])


def test_crop_respects_max_class_ratio():
    """A 60/40 map: plain 30x30 crops are mostly one class; crops redrawn up to 10 times mostly are not."""
    labels = np.zeros((100, 100), np.uint8)
    labels[:, 60:] = 1
    sample = {"image": np.zeros((100, 100, 3), np.uint8), "semseg": labels}
    crop = RandomCrop((30, 30), cat_max_ratio=0.75)
    plain = RandomCrop((30, 30))
    shares_constrained, shares_plain = [], []
    for seed in range(30):
        for step, shares in ((crop, shares_constrained), (plain, shares_plain)):
            out = step(dict(sample), {"semseg": "label"}, np.random.default_rng(seed))["semseg"]
            shares.append(np.bincount(out.ravel(), minlength=2).max() / out.size)
    # A crop is balanced for 15 of 71 left positions: P(plain) ~ 0.21, P(10 draws) ~ 0.91.
    assert np.mean(np.array(shares_plain) < 0.75) < 0.4
    assert np.mean(np.array(shares_constrained) < 0.75) > 0.75


def test_same_seed_same_sample_and_photometric_only_touches_the_image():
    sample, _ = scene()
    steps = [dict(type="HorizontalFlip", p=0.5), dict(type="ColorJitter", p=1.0), dict(type="RandomScale", p=1.0)]
    pipeline = Pipeline(steps, KINDS)
    a, b, c = pipeline(dict(sample), 5), pipeline(dict(sample), 5), pipeline(dict(sample), 6)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert any(a[k].shape != c[k].shape or not np.array_equal(a[k], c[k]) for k in a)
    jitter_only = Pipeline([dict(type="ColorJitter", p=1.0)], KINDS)(dict(sample), 0)
    assert not np.array_equal(jitter_only["image"], sample["image"])
    for key in KINDS:
        np.testing.assert_array_equal(jitter_only[key], sample[key])


@pytest.mark.parametrize("seed", range(3))
def test_flip_and_zoom_keep_every_target_consistent(seed):
    """After a random zoom and a flip, depth, normals, labels and edges still describe one scene."""
    sample, (fx, fy, cx, cy) = scene()
    raw = render_scene(0, 3, 96, 128)
    sample["instances"] = raw["instances"].astype(np.uint8)
    kinds = {**KINDS, "instances": "label"}
    steps = [dict(type="RandomScale", scale_limit=(-0.4, 0.6), p=1.0), dict(type="HorizontalFlip", p=1.0)]
    out = Pipeline(steps, kinds)(dict(sample), seed=seed)
    height, width = out["depth"].shape
    zoom_y, zoom_x = height / 96, width / 128
    # Intrinsics of the transformed image: pixel centres scale, then the flip mirrors columns.
    intrinsics = np.array(
        [fx * zoom_x, fy * zoom_y, (width - 1) - ((cx + 0.5) * zoom_x - 0.5), (cy + 0.5) * zoom_y - 0.5]
    )
    step = int(np.ceil(max(zoom_y, zoom_x))) + 1
    interior = smooth_interior(out["instances"], margin=step + 1)
    interior[: step + 1], interior[-step - 1 :], interior[:, : step + 1], interior[:, -step - 1 :] = (
        False,
        False,
        False,
        False,
    )
    from_depth = normals_from_depth(out["depth"], intrinsics, step)
    # A few degrees of resampling error (nearest zoom, finite differences) against tens of
    # degrees if any rule were missing (see the flip test's control).
    assert np.median(angle_deg(from_depth, out["normals"])[interior]) < 3.0
    unflipped = out["normals"] * np.array([-1.0, 1.0, 1.0])
    sides = interior & (np.abs(out["normals"][..., 0]) > 0.3)
    assert np.median(angle_deg(from_depth, unflipped)[sides]) > 30
    # Labels follow the same pixels: the floor class is where the floor instance is, and
    # edges still sit where the instance changes (nearest resampling keeps that exactly).
    np.testing.assert_array_equal(out["semseg"] == 1, out["instances"] == 1)
    assert set(np.unique(out["edge"])) <= {0, 1}
