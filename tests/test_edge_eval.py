"""Hand-checked values for vismtl.tasks.edge_eval (NMS, matching counts, ODS / OIS / AP)."""

from __future__ import annotations

import time
import warnings

import cv2
import numpy as np
import pytest

from vismtl.tasks.edge_eval import (
    edge_match_counts,
    edge_nms,
    edge_thresholds,
    ods_from_pooled,
    ods_ois_f,
    precision_recall_f,
    tolerance_px,
)

N = 128  # 128 x 128 with max_dist 0.0075: tol = 0.0075 * 128 * sqrt(2) = 1.3576 px


def vline(col: int, value: float = 1.0, n: int = N) -> np.ndarray:
    """``[n, n]`` float64 map with one full-height vertical line."""
    image = np.zeros((n, n))
    image[:, col] = value
    return image


def test_thresholds_and_tolerance() -> None:
    thresholds = edge_thresholds(99)
    assert thresholds[0] == 0.01 and thresholds[79] == 0.8 and thresholds[-1] == 0.99
    assert tolerance_px((N, N), 0.0075) == pytest.approx(1.3576, abs=1e-4)


def test_identical_line_is_perfect_up_to_its_value() -> None:
    counts = edge_match_counts(vline(64, 0.8), vline(64) > 0)
    # thresholds 0.01 .. 0.80 (indices 0..79, ">=" includes 0.80): everything matched
    np.testing.assert_array_equal(counts[:80], np.tile([N, N, N, N], (80, 1)))
    np.testing.assert_array_equal(counts[80:], np.tile([0, N, 0, 0], (19, 1)))
    precision, recall, f = precision_recall_f(counts)
    assert (f[:80] == 1).all() and (f[80:] == 0).all()
    assert (precision[80:] == 0).all() and (recall[80:] == 0).all()  # 0 / 0 -> 0, no NaN


@pytest.mark.parametrize(("shift", "matched"), [(1, N), (3, 0)])
def test_shifted_line(shift: int, matched: int) -> None:
    counts = edge_match_counts(vline(64 + shift, 0.5), vline(64) > 0)
    np.testing.assert_array_equal(counts[0], [matched, N, matched, N])


def test_tolerance_is_a_disc() -> None:
    gt = np.zeros((N, N), bool)
    gt[64, 64] = True
    pred = np.zeros((N, N))
    pred[64, 65] = 0.5  # distance 1 <= 1.3576: matched
    pred[66, 66] = 0.5  # distance 2.83: not
    pred[65, 63] = 0.5  # distance sqrt(2) = 1.414 > 1.3576: not (a square window would match it)
    np.testing.assert_array_equal(edge_match_counts(pred, gt)[0], [1, 1, 1, 3])


def test_two_predictions_near_one_gt_pixel_both_match() -> None:
    # Not one-to-one: SEISM would match one of the two predictions (P = 0.5), we match both.
    gt = np.zeros((N, N), bool)
    gt[64, 64] = True
    pred = np.zeros((N, N))
    pred[64, 63] = pred[64, 65] = 0.5
    counts = edge_match_counts(pred, gt)
    np.testing.assert_array_equal(counts[49], [1, 1, 2, 2])  # threshold 0.50
    np.testing.assert_array_equal(counts[50], [0, 1, 0, 0])  # threshold 0.51


def test_empty_gt_gives_zero_recall_without_nan() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts = edge_match_counts(vline(10, 0.6), np.zeros((N, N), bool))
        np.testing.assert_array_equal(counts[0], [0, 0, 0, N])
        scores = ods_ois_f(counts[None])
    assert scores["odsF"] == 0 and scores["odsR"] == 0 and scores["oisF"] == 0
    assert all(np.isfinite(value) for value in scores.values())


def two_images() -> np.ndarray:
    """``[2, 99, 4]``: A = true line at 0.9 + false line at 0.3; B = true line at 0.3."""
    gt = vline(20) > 0
    counts_a = edge_match_counts(vline(20, 0.9) + vline(100, 0.3), gt)
    counts_b = edge_match_counts(vline(20, 0.3), gt)
    return np.stack([counts_a, counts_b])


def test_pooled_ods_differs_from_mean_of_per_image_f() -> None:
    counts = two_images()
    # t <= 0.3: A has P = 1/2, R = 1 (F = 2/3); B is perfect. Pooled: P = 256/384, R = 1 -> F = 0.8.
    # 0.3 < t <= 0.9: A is perfect, B empty. Pooled: P = 1, R = 1/2 -> F = 2/3.
    scores = ods_ois_f(counts)
    assert scores["odsF"] == pytest.approx(0.8)
    assert scores["odsP"] == pytest.approx(2 / 3) and scores["odsR"] == 1
    assert scores["ods_threshold"] == 0.01  # lowest of the tied thresholds
    assert ods_from_pooled(counts.sum(axis=0)) == {k: scores[k] for k in ("odsF", "odsP", "odsR", "ods_threshold")}
    _, _, f_img = precision_recall_f(counts)
    assert f_img[:, 0].mean() == pytest.approx((2 / 3 + 1) / 2)  # mean F at the ODS threshold != 0.8
    assert scores["oisF"] == 1 and scores["oisF_mean"] == 1  # each image is perfect at its own threshold


def test_ois_pools_counts_at_each_images_best_threshold() -> None:
    counts = np.array([[[10, 10, 10, 10]], [[0, 30, 0, 30]]], float)  # N = 2, T = 1
    scores = ods_ois_f(counts)
    assert scores["oisF"] == pytest.approx(0.25)  # BSDS: (10 / 40) for both P and R
    assert scores["oisF_mean"] == pytest.approx(0.5)  # mean of F = 1 and F = 0


def test_average_precision() -> None:
    # Pooled curve of two_images(): (R, P) = (1/2, 1) and (1, 2/3); P interpolated linearly at
    # R = 0.50, 0.51, .., 1.00: sum_j (1 - (2/3) j / 100), j = 0..50 = 51 - 8.5 -> AP = 0.425.
    assert ods_ois_f(two_images())["ap"] == pytest.approx(0.425)


def test_ignore_mask_removes_pixels_from_both_sides() -> None:
    gt = (vline(20) + vline(100)) > 0
    pred = vline(20, 0.8) + vline(60, 0.8)  # line 60 is a false positive
    np.testing.assert_array_equal(edge_match_counts(pred, gt)[0], [N, 2 * N, N, 2 * N])
    ignore = np.zeros((N, N), bool)
    ignore[:, 50:110] = True  # drops gt line 100 and prediction line 60
    np.testing.assert_array_equal(edge_match_counts(pred, gt, ignore=ignore)[0], [N, N, N, N])
    ignore = vline(21) > 0  # an ignored prediction cannot match a kept gt pixel
    np.testing.assert_array_equal(edge_match_counts(vline(21, 0.8), vline(20) > 0, ignore=ignore)[0], [0, N, 0, 0])


def test_many_thresholds_use_wide_bins() -> None:
    counts = edge_match_counts(vline(64, 0.8), vline(64) > 0, num_thresholds=300)
    assert counts.shape == (300, 4)
    assert (counts[:, 0] == N).sum() == 240  # k / 301 <= 0.8  <=>  k <= 240


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        edge_match_counts(np.zeros((4, 5)), np.zeros((5, 4)))


def blurred_line(kind: str, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A 1-px line (``h``, ``v`` or diagonal ``d``) and its Gaussian blur with peak 1."""
    line = np.zeros((n, n), np.float32)
    if kind == "h":
        line[30, :] = 1
    elif kind == "v":
        line[:, 30] = 1
    else:
        np.fill_diagonal(line, 1)
    blurred = cv2.GaussianBlur(line, (0, 0), 1.5)
    return line > 0, blurred / blurred.max()


@pytest.mark.parametrize("kind", ["h", "v", "d"])
def test_nms_thins_blurred_line_to_original(kind: str) -> None:
    line, blurred = blurred_line(kind)
    thin = edge_nms(blurred, border=0)
    assert thin.dtype == np.float32 and thin.shape == blurred.shape
    inner = (slice(8, -8), slice(8, -8))  # away from line ends and image borders
    np.testing.assert_array_equal(thin[inner] > 0, line[inner])
    np.testing.assert_array_equal(thin[line], blurred[line])  # maxima keep their values


def test_nms_border_ramp() -> None:
    _, blurred = blurred_line("v")
    blurred = np.roll(blurred, -28, axis=1)  # line now at column 2
    thin = edge_nms(blurred, border=5)
    assert thin[32, 2] == pytest.approx(blurred[32, 2] * 2 / 5)  # 2 px from the edge: x 2/5
    assert thin[0].max() == 0 and thin[:, 0].max() == 0  # outermost rows/columns -> 0
    assert thin[32, 2] == pytest.approx(edge_nms(blurred, border=0)[32, 2] * 2 / 5)


def test_speed_512() -> None:
    rng = np.random.default_rng(0)
    prob = cv2.GaussianBlur(rng.random((512, 512), dtype=np.float32), (0, 0), 2)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    gt = edge_nms(prob) > 0.5
    start = time.perf_counter()
    for _ in range(10):
        edge_match_counts(edge_nms(prob), gt, max_dist=0.011)
    per_image = (time.perf_counter() - start) / 10
    print(f"edge NMS + counts, 512x512: {1000 * per_image:.1f} ms / image")
    assert per_image < 1.0  # loose: only catches an accidental O(pixels x thresholds) path
