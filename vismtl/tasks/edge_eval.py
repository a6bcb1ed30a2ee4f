"""Boundary-detection evaluation: edge NMS and streaming ODS / OIS F-measure.

The PASCAL-Context and NYUD-v2 multi-task benchmarks report odsF from the MATLAB SEISM
toolbox. This module is a fast, streaming Python stand-in:

1. :func:`edge_nms` thins a probability map as Dollar's structured-edge NMS does
   (``edgesNmsMex(E, O, r=1, s=5, m=1.01)`` as called by ``edgesDetect.m``).
2. :func:`edge_match_counts` gives, per image and for all thresholds at once, the counts
   ``(cntR, sumR, cntP, sumP)``; they are integers stored in float64, so sums over images
   and over distributed ranks are exact.
3. :func:`ods_from_pooled` / :func:`ods_ois_f` turn counts into ODS, OIS and AP.

Conventions (as in the BSDS / Dollar code): thresholds ``k / (n + 1)``, ``k = 1..n``
(0.01..0.99 for n = 99, each exactly rounded); a pixel is predicted at threshold t if
``pred >= t`` (compared in float64); tolerance ``max_dist * hypot(H, W)`` pixels, a
pixel pair matches if its Euclidean distance is ``<= tol``; P = 0 when nothing is
predicted, R = 0 when there is no ground truth, F = 0 when P + R = 0.

How the numbers differ from SEISM (compare trends, not decimals; the project offers an
exporter so that final numbers can be produced with SEISM itself):

- **No one-to-one assignment.** SEISM (via ``correspondPixels``) matches predicted and gt
  pixels by a bipartite assignment, so every gt pixel absorbs at most one prediction. Here a
  predicted pixel is matched if *any* gt pixel lies within ``tol`` and a gt pixel is matched
  if *any* prediction does, so one predicted pixel may cover several gt pixels and vice
  versa. For the same binary maps cntP and cntR are >= the assignment's match count, so P
  and R (and F, hence odsF) are upper bounds of SEISM's and read somewhat higher. How much
  depends on how thick the predictions are; we cannot run SEISM here, so no calibrated
  offset is claimed.
- **Thinning.** SEISM / BSDS thin each thresholded map (``bwmorph(.., 'thin', inf)``) and
  use their own gt preparation; we count the map as given. Without thinning, a thick band
  around a gt edge is *all* "matched" and precision is not penalised: run :func:`edge_nms`
  first (``EdgeMetric`` does).
- **NMS orientation.** Dollar's ``atan(Oyy * sign(-Oxy) / Oxx)`` approximates the normal
  angle (it equals ``atan(tan^2 theta)``) and degenerates when ``Oxy == 0`` exactly (e.g. a
  perfectly horizontal line); we take the exact principal direction of the Hessian.
- **Threshold search.** BSDS / Dollar interpolate F between adjacent thresholds when taking
  the maximum; we take the maximum over the discrete thresholds.
"""

from __future__ import annotations

import cv2
import numpy as np

NMS_MARGIN = 1.01  # edgesNmsMex 'm': a pixel survives unless a neighbour beats it by 1 %
SMOOTH_RADIUS = 4  # convTri radius used by edgesDetect before taking derivatives


def edge_thresholds(num_thresholds: int = 99) -> np.ndarray:
    """``[T]`` float64 thresholds ``k / (T + 1)``, k = 1..T (0.01..0.99 for T = 99)."""
    return np.arange(1, num_thresholds + 1, dtype=np.float64) / (num_thresholds + 1)


def tolerance_px(shape: tuple[int, ...], max_dist: float) -> float:
    """Matching tolerance in pixels: ``max_dist`` x the image diagonal."""
    return float(max_dist * np.hypot(shape[0], shape[1]))


# ----------------------------------------------------------------------------- NMS


def _conv_tri(image: np.ndarray, radius: int) -> np.ndarray:
    """Dollar's convTri: separable triangle filter ``[1..r+1..1] / (r+1)^2``, symmetric padding."""
    kernel = np.concatenate([np.arange(1, radius + 2), np.arange(radius, 0, -1)]).astype(np.float32)
    kernel /= kernel.sum()
    return cv2.sepFilter2D(image, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REFLECT)


def _normal_orientation(prob: np.ndarray) -> np.ndarray:
    """``[H, W]`` angle (radians, x = columns, y = rows) of the edge normal at every pixel.

    The normal is the Hessian eigenvector with the largest |eigenvalue|: across a ridge the
    curvature is strong, along it weak. Unlike Dollar's formula this is exact for straight
    edges and does not flip on the ridge flanks where the curvature changes sign.
    """
    smooth = _conv_tri(prob, SMOOTH_RADIUS)
    grad_y, grad_x = np.gradient(smooth)
    hxx = np.gradient(grad_x, axis=1)
    hyy = np.gradient(grad_y, axis=0)
    hxy = np.gradient(grad_x, axis=0)
    # 0.5 * atan2 is the direction of the algebraically larger eigenvalue; a ridge
    # (negative trace) has its strong curvature on the other one, 90 degrees away.
    theta = 0.5 * np.arctan2(2.0 * hxy, hxx - hyy)
    return theta + np.where(hxx + hyy < 0, np.pi / 2, 0.0).astype(np.float32)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``image`` sampled at float positions ``x, y`` (any shape), clamped like edgesNmsMex."""
    h, w = image.shape
    x = np.clip(x, 0.0, w - 1.001)
    y = np.clip(y, 0.0, h - 1.001)
    x0, y0 = x.astype(np.intp), y.astype(np.intp)  # floor: coordinates are >= 0
    dx, dy = x - x0, y - y0
    flat, idx = image.ravel(), y0 * w + x0
    top = flat[idx] * (1 - dx) + flat[idx + 1] * dx
    bottom = flat[idx + w] * (1 - dx) + flat[idx + w + 1] * dx
    return top * (1 - dy) + bottom * dy


def _border_ramp(shape: tuple[int, int], border: int) -> np.ndarray:
    """``[H, W]`` weights ``min(d, s) / s`` per axis (d = distance to the image edge), as edgesNmsMex."""
    h, w = shape
    s = min(border, h // 2, w // 2)
    if s <= 0:
        return np.ones(shape, np.float32)
    ramp_y = np.minimum(np.minimum(np.arange(h), np.arange(h)[::-1]), s) / s
    ramp_x = np.minimum(np.minimum(np.arange(w), np.arange(w)[::-1]), s) / s
    return np.outer(ramp_y, ramp_x).astype(np.float32)


def edge_nms(prob: np.ndarray, radius: int = 1, border: int = 5) -> np.ndarray:
    """Thin ``prob`` ``[H, W]`` (values in [0, 1]) by non-maximum suppression across the edge.

    Each pixel is compared with its neighbours at distance 1..``radius`` on both sides along the
    edge normal (bilinear interpolation); it is set to 0 if ``value * 1.01`` is below any of
    them, otherwise it keeps its value. Like edgesNmsMex, the result is then multiplied by a
    linear ramp over the outer ``border`` pixels (0 on the outermost row/column, 1 from
    ``border`` px inwards) because the orientation estimate is unreliable there; ``border=0``
    disables it. Whether a given SEISM pipeline applied this ramp is not verifiable here.

    Returns:
        ``[H, W]`` float32 map.
    """
    e0 = np.ascontiguousarray(prob, dtype=np.float32)
    if e0.ndim != 2 or min(e0.shape) < 2:
        raise ValueError(f"edge_nms expects a [H, W] map with H, W >= 2, got shape {e0.shape}")
    theta = _normal_orientation(e0)
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    ys, xs = np.indices(e0.shape, dtype=np.float32)
    scaled = e0 * NMS_MARGIN
    suppressed = np.zeros(e0.shape, bool)
    for step in range(1, radius + 1):
        for d in (step, -step):
            suppressed |= scaled < _bilinear(e0, xs + d * cos_t, ys + d * sin_t)
    out = np.where(suppressed, np.float32(0), e0)
    if border > 0:
        out *= _border_ramp(e0.shape, border)
    return out


# -------------------------------------------------------------------------- counts


def _disc_kernel(tol: float) -> np.ndarray:
    """``[2r+1, 2r+1]`` uint8 footprint of offsets with ``dy^2 + dx^2 <= tol^2``."""
    r = int(np.floor(tol))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    return (dy * dy + dx * dx <= tol * tol).astype(np.uint8)


def _threshold_bins(pred: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``[H, W]`` number of thresholds each value reaches (``pred >= t``), as uint8/uint16.

    The bin index is monotone in the value, so max-filtering bins equals binning the max.
    """
    dtype = np.uint8 if thresholds.size < 255 else np.uint16  # types cv2.dilate supports
    bins = np.zeros(pred.shape, dtype)
    active = pred >= thresholds[0]  # after NMS most pixels are 0: skip them
    bins[active] = np.searchsorted(thresholds, pred[active], side="right")
    return bins


def _count_at_or_above(bins: np.ndarray, num_thresholds: int) -> np.ndarray:
    """``[T]`` float64: for threshold k, how many of ``bins`` (any shape) exceed k."""
    hist = np.bincount(bins.ravel(), minlength=num_thresholds + 1).astype(np.float64)
    return np.cumsum(hist[::-1])[::-1][1:]  # cumulative from the top: all thresholds at once


def edge_match_counts(
    pred: np.ndarray,
    gt: np.ndarray,
    max_dist: float = 0.0075,
    num_thresholds: int = 99,
    ignore: np.ndarray | None = None,
) -> np.ndarray:
    """Per-image counts for all thresholds, in O(pixels).

    Args:
        pred: ``[H, W]`` float edge probabilities in [0, 1], NMS-thinned if wanted.
        gt: ``[H, W]`` bool/uint8 edge map (non-zero = edge).
        max_dist: tolerance as a fraction of the image diagonal (0.0075 PASCAL, 0.011 NYUD).
        num_thresholds: T; thresholds from :func:`edge_thresholds`.
        ignore: optional ``[H, W]`` bool mask of pixels removed from both the predictions and
            the ground truth (they neither count nor match anything).

    Returns:
        ``[T, 4]`` float64 columns ``(cntR, sumR, cntP, sumP)`` for predictions ``pred >= t``:
        cntP = predicted pixels within ``tol`` of some gt pixel, cntR = gt pixels within
        ``tol`` of some predicted pixel (not one-to-one, see the module docstring).
    """
    pred = np.ascontiguousarray(pred, dtype=np.float64)
    gt = np.asarray(gt) != 0
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be equal [H, W] shapes")
    if not np.isfinite(pred).all():
        raise ValueError("pred contains NaN or inf")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        pred = np.where(ignore, 0.0, pred)  # 0 is below every threshold: never predicted
        gt = gt & ~ignore
    thresholds = edge_thresholds(num_thresholds)
    kernel = _disc_kernel(tolerance_px(pred.shape, max_dist))
    bins = _threshold_bins(pred, thresholds)
    # Dilating with the disc == "Euclidean distance <= tol", with one footprint for both
    # directions so the two matching criteria are exactly symmetric.
    near_gt = cv2.dilate(gt.astype(np.uint8), kernel) > 0
    best_near = cv2.dilate(bins, kernel)  # highest threshold reached within tol of each pixel
    counts = np.empty((num_thresholds, 4), np.float64)
    counts[:, 0] = _count_at_or_above(best_near[gt], num_thresholds)
    counts[:, 1] = np.count_nonzero(gt)
    counts[:, 2] = _count_at_or_above(bins[near_gt], num_thresholds)
    counts[:, 3] = _count_at_or_above(bins, num_thresholds)
    return counts


# ------------------------------------------------------------------------- scores


def precision_recall_f(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[..., 4]`` counts -> P, R, F ``[...]``; 0 wherever a denominator is 0 (no NaN)."""
    cnt_r, sum_r, cnt_p, sum_p = np.moveaxis(np.asarray(counts, np.float64), -1, 0)
    precision = np.divide(cnt_p, sum_p, out=np.zeros_like(cnt_p), where=sum_p > 0)
    recall = np.divide(cnt_r, sum_r, out=np.zeros_like(cnt_r), where=sum_r > 0)
    total = precision + recall
    f = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return precision, recall, f


def ods_from_pooled(counts: np.ndarray) -> dict[str, float]:
    """``[T, 4]`` counts summed over a dataset -> best F over thresholds (lowest on ties).

    Returns ``odsF, odsP, odsR, ods_threshold``. On one image's counts this is that image's
    best F (the OIS ingredient).
    """
    precision, recall, f = precision_recall_f(counts)
    k = int(np.argmax(f))
    threshold = edge_thresholds(len(f))[k]
    return {
        "odsF": float(f[k]),
        "odsP": float(precision[k]),
        "odsR": float(recall[k]),
        "ods_threshold": float(threshold),
    }


def _average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Dollar's edgesEvalDir AP: P interpolated at recall 0:0.01:1 (inside the curve), summed / 100."""
    rec, first = np.unique(recall, return_index=True)  # first occurrence = lowest threshold
    keep = rec > 0
    rec, prec = rec[keep], precision[first][keep]
    if rec.size < 2:
        return 0.0
    curve = np.interp(np.linspace(0.0, 1.0, 101), rec, prec, left=np.nan, right=np.nan)
    return float(np.nansum(curve) / 100.0)


def ods_ois_f(counts_per_image: np.ndarray) -> dict[str, float]:
    """``[N, T, 4]`` per-image counts -> dataset scores.

    Returns:
        ``odsF, odsP, odsR, ods_threshold``: one threshold for the dataset, pooled counts.
        ``oisF, oisP, oisR``: each image at its own best threshold, counts then pooled (the
        BSDS / Dollar convention). ``oisF_mean``: mean over images of each image's best F.
        ``ap``: Dollar-style average precision of the pooled PR curve.
    """
    counts = np.asarray(counts_per_image, np.float64)
    pooled = counts.sum(axis=0)
    scores = ods_from_pooled(pooled)
    _, _, f_img = precision_recall_f(counts)  # [N, T]
    best = np.argmax(f_img, axis=1)
    at_best = counts[np.arange(len(counts)), best].sum(axis=0)
    ois_p, ois_r, ois_f = precision_recall_f(at_best)
    precision, recall, _ = precision_recall_f(pooled)
    scores.update(
        oisF=float(ois_f),
        oisP=float(ois_p),
        oisR=float(ois_r),
        oisF_mean=float(f_img.max(axis=1).mean()) if len(counts) else 0.0,
        ap=_average_precision(precision, recall),
    )
    return scores
