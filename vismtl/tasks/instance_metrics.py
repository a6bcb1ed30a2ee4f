"""Instance-level metrics for computational pathology: Dice, AJI, AJI+, PQ, detection F1, patch scores.

Instance maps are integer arrays (``[H, W]``, any shape works) with 0 = background and any positive
ids (not necessarily contiguous). Every metric comes in two halves so that a streaming metric can
accumulate over images and distributed ranks by plain summation:

- ``*_stats(...)``: per-image sufficient statistics, a fixed-length float64 array (counts are
  integers stored in float64, exact up to 2**53);
- ``*_from_stats(summed)``: final values from the summed arrays.

Where the literature uses both readings, a stats array carries the pooled sums *and* the sum of
per-image values plus an image count, so one accumulation gives both:

- "pooled" / "aggregated": sums over all images, then one ratio (AJI over a dataset as
  ``sum C / sum U``; CoNIC's mPQ+ pools tp / fp / fn / IoU per class over all images);
- "per image": the metric per image, averaged over images (MoNuSeg's AJI, HoVer-Net's
  ``compute_stats`` for PQ and AJI).

NaN-free conventions, the same everywhere: a ratio whose denominator is 0 is ``empty_value``
(default 1.0) when there was nothing to find and nothing was found (no gt, no prediction), and 0.0
otherwise (e.g. SQ with predictions but no true positive). Reference code that adds an epsilon to
denominators (HoVer-Net, CoNIC) scores the "nothing at all" case 0 instead: pass ``empty_value=0``.

Pairwise overlaps are computed sparsely (one bincount over gt / pred label pairs), so a 512 x 512
map with 300 nuclei takes a few milliseconds per metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

DICE_FIELDS = ("inter", "sum_pred", "sum_gt", "sum_image_dice", "num_images")
AJI_FIELDS = ("inter", "union", "sum_image_aji", "num_images")
PQ_FIELDS = ("tp", "fp", "fn", "sum_iou", "sum_image_pq", "sum_image_dq", "sum_image_sq", "num_images")
CLASS_PQ_FIELDS = ("tp", "fp", "fn", "sum_iou")  # one row per class 1..C
DETECTION_FIELDS = ("tp", "fp", "fn")
TYPE_FIELDS = ("tp", "fp", "fn", "unmatched_pred", "unmatched_gt")  # one row per class 1..C
_DENSE_PAIRS = 1 << 22  # up to this many (gt, pred) id pairs, bincount; beyond, sort


def _ratio(num: float, den: float, empty_value: float, nothing: bool) -> float:
    """``num / den``; for ``den == 0``: ``empty_value`` if there was nothing at all, else 0."""
    if den > 0:
        return float(num / den)
    return float(empty_value) if nothing else 0.0


def _mean(values: np.ndarray, empty_value: float) -> float:
    """Mean of ``values``, or ``empty_value`` when there are none."""
    return float(values.mean()) if values.size else float(empty_value)


# ----------------------------------------------------------------------------- overlaps


def _relabel(inst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instance map -> flat labels ``[N]`` in 0..K (0 = background), sorted ids ``[K]``, areas ``[K]``."""
    flat = np.asarray(inst).ravel()
    if flat.dtype.kind not in "biu":
        raise TypeError(f"instance maps must hold integers, got {flat.dtype}")
    if flat.size and flat.min() < 0:
        raise ValueError("instance ids must be >= 0 (0 = background)")
    top = int(flat.max()) if flat.size else 0
    if top <= 4 * flat.size + 1024:  # small ids: a lookup table is O(N), no sort
        flat = flat.astype(np.int64, copy=False)
        counts = np.bincount(flat, minlength=top + 1)
        ids = np.flatnonzero(counts[1:]) + 1
        lut = np.zeros(top + 1, np.int64)
        lut[ids] = np.arange(1, ids.size + 1)
        return lut[flat], ids, counts[ids]
    ids, labels, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if ids[0] != 0:
        return labels.astype(np.int64) + 1, ids.astype(np.int64), counts
    return labels.astype(np.int64), ids[1:].astype(np.int64), counts[1:]


@dataclass(frozen=True)
class Overlap:
    """Sparse pairwise overlap of a gt and a predicted instance map.

    ``gt_ids`` / ``gt_area`` ``[G]`` and ``pred_ids`` / ``pred_area`` ``[P]`` (ids ascending);
    ``pair_gt`` / ``pair_pred`` ``[M]``: indices into those of every (gt, pred) pair sharing
    pixels, ``pair_inter`` ``[M]``: the number of shared pixels (> 0).
    """

    gt_ids: np.ndarray
    gt_area: np.ndarray
    pred_ids: np.ndarray
    pred_area: np.ndarray
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    pair_inter: np.ndarray

    def union(self) -> np.ndarray:
        """``[M]`` pixel count of each pair's union."""
        return self.gt_area[self.pair_gt] + self.pred_area[self.pair_pred] - self.pair_inter

    def iou(self) -> np.ndarray:
        """``[M]`` float64 IoU of each overlapping pair."""
        return self.pair_inter / self.union()


def instance_overlap(gt: np.ndarray, pred: np.ndarray) -> Overlap:
    """Pairwise intersections of two instance maps of the same shape, without looping over objects."""
    if np.shape(gt) != np.shape(pred):
        raise ValueError(f"gt and pred shapes differ: {np.shape(gt)} vs {np.shape(pred)}")
    g, gt_ids, gt_area = _relabel(gt)
    p, pred_ids, pred_area = _relabel(pred)
    both = (g > 0) & (p > 0)
    n_pred = max(pred_ids.size, 1)
    codes = (g[both] - 1) * n_pred + (p[both] - 1)  # one integer per (gt, pred) pair
    if gt_ids.size * n_pred <= _DENSE_PAIRS:
        counts = np.bincount(codes)
        pairs = np.flatnonzero(counts)
        inter = counts[pairs]
    else:
        pairs, inter = np.unique(codes, return_counts=True)
    return Overlap(gt_ids, gt_area, pred_ids, pred_area, pairs // n_pred, pairs % n_pred, inter)


def _unpaired_area(area: np.ndarray, used: np.ndarray) -> int:
    """Total area of the objects whose index is not in ``used``."""
    free = np.ones(area.size, bool)
    free[used] = False
    return int(area[free].sum())


# ----------------------------------------------------------------------------- Dice


def dice_stats(ov: Overlap, empty_value: float = 1.0) -> np.ndarray:
    """Binary Dice (foreground = id > 0) of one image -> ``[5]`` :data:`DICE_FIELDS`.

    ``empty_value`` is this image's Dice when it has neither gt nor prediction.
    """
    inter, sum_pred, sum_gt = ov.pair_inter.sum(), ov.pred_area.sum(), ov.gt_area.sum()
    image = _ratio(2 * inter, sum_pred + sum_gt, empty_value, True)
    return np.array([inter, sum_pred, sum_gt, image, 1.0], np.float64)


def dice_from_stats(stats: np.ndarray, empty_value: float = 1.0) -> dict[str, float]:
    """Summed ``[5]`` stats -> ``dice`` (pooled ``2 I / (P + G)``) and ``dice_per_image`` (mean)."""
    inter, sum_pred, sum_gt, sum_image, n = stats
    return {
        "dice": _ratio(2 * inter, sum_pred + sum_gt, empty_value, True),
        "dice_per_image": _ratio(sum_image, n, empty_value, True),
    }


# ----------------------------------------------------------------------------- AJI / AJI+


def _aji_row(ov: Overlap, chosen: np.ndarray, empty_value: float) -> np.ndarray:
    """``[4]`` AJI stats from the chosen pair indices; unchosen gt and pred areas join the union."""
    inter = int(ov.pair_inter[chosen].sum())
    union = int(ov.union()[chosen].sum())
    union += _unpaired_area(ov.gt_area, ov.pair_gt[chosen]) + _unpaired_area(ov.pred_area, ov.pair_pred[chosen])
    return np.array([inter, union, _ratio(inter, union, empty_value, True), 1.0], np.float64)


def aji_stats(ov: Overlap, empty_value: float = 1.0) -> np.ndarray:
    """Aggregated Jaccard Index (Kumar et al. 2017) of one image -> ``[4]`` :data:`AJI_FIELDS`.

    Each gt object takes the overlapping prediction of highest IoU (ties: lowest pred id) and adds
    that pair's intersection to C and union to U; a gt object without overlap adds its area to U;
    afterwards every prediction never taken adds its area to U. A prediction may be taken by several
    gt objects and then counts in U several times (the over-penalty that AJI+ removes).
    """
    iou = ov.iou()
    order = np.lexsort((ov.pair_pred, -iou, ov.pair_gt))  # per gt: best IoU first, then lowest pred
    sorted_gt = ov.pair_gt[order]
    first = np.ones(order.size, bool)
    first[1:] = sorted_gt[1:] != sorted_gt[:-1]
    return _aji_row(ov, order[first], empty_value)


def _max_iou_assignment(ov: Overlap, iou: np.ndarray) -> np.ndarray:
    """Pair indices of a one-to-one assignment maximising total IoU (Hungarian)."""
    gt_deg = np.bincount(ov.pair_gt, minlength=ov.gt_ids.size)
    pred_deg = np.bincount(ov.pair_pred, minlength=ov.pred_ids.size)
    # A pair whose gt and pred overlap nothing else is its own component: always assigned.
    lone = (gt_deg[ov.pair_gt] == 1) & (pred_deg[ov.pair_pred] == 1)
    rest = np.flatnonzero(~lone)
    if rest.size == 0:
        return np.flatnonzero(lone)
    rows, row_of = np.unique(ov.pair_gt[rest], return_inverse=True)
    cols, col_of = np.unique(ov.pair_pred[rest], return_inverse=True)
    gain = np.zeros((rows.size, cols.size))
    gain[row_of, col_of] = iou[rest]
    index = np.full(gain.shape, -1)
    index[row_of, col_of] = rest
    r, c = linear_sum_assignment(gain, maximize=True)
    chosen = index[r, c]
    return np.concatenate([np.flatnonzero(lone), chosen[chosen >= 0]])  # -1: assigned without overlap


def aji_plus_stats(ov: Overlap, empty_value: float = 1.0) -> np.ndarray:
    """AJI+ (Graham et al. 2019) of one image -> ``[4]`` :data:`AJI_FIELDS`.

    As AJI, but gt and predictions are paired one-to-one by the Hungarian assignment maximising total
    IoU (``scipy.optimize.linear_sum_assignment``, as HoVer-Net's ``get_fast_aji_plus``), so no
    prediction counts twice; unpaired gt and predictions add their areas to U.
    """
    return _aji_row(ov, _max_iou_assignment(ov, ov.iou()), empty_value)


def aji_from_stats(stats: np.ndarray, empty_value: float = 1.0, name: str = "aji") -> dict[str, float]:
    """Summed ``[4]`` stats -> ``{name}`` (aggregated ``sum C / sum U``) and ``{name}_per_image`` (mean)."""
    inter, union, sum_image, n = stats
    return {name: _ratio(inter, union, empty_value, True), f"{name}_per_image": _ratio(sum_image, n, empty_value, True)}


# ----------------------------------------------------------------------------- PQ


def _pq_dq_sq(tp: float, fp: float, fn: float, sum_iou: float, empty_value: float) -> tuple[float, float, float]:
    """PQ = sum IoU / (TP + FP/2 + FN/2), DQ = TP / (TP + FP/2 + FN/2), SQ = sum IoU / TP."""
    nothing = tp + fp + fn == 0
    den = tp + 0.5 * (fp + fn)
    return (
        _ratio(sum_iou, den, empty_value, nothing),
        _ratio(tp, den, empty_value, nothing),
        _ratio(sum_iou, tp, empty_value, nothing),
    )


def _check_match_iou(match_iou: float) -> None:
    if match_iou < 0.5:
        raise ValueError(f"match_iou must be >= 0.5 so that matches are unique, got {match_iou}")


def pq_stats(ov: Overlap, match_iou: float = 0.5, empty_value: float = 1.0) -> np.ndarray:
    """Panoptic Quality (Kirillov et al.; instance form of Graham et al.) of one image -> ``[8]`` :data:`PQ_FIELDS`.

    A pair matches if IoU > ``match_iou`` (strictly; >= 0.5 makes matches unique without an assignment).
    Per-image SQ is 0 for an image with objects but no match (as HoVer-Net's ``get_fast_pq``).
    """
    _check_match_iou(match_iou)
    iou = ov.iou()
    matched = iou > match_iou
    tp = int(matched.sum())
    fp, fn, sum_iou = ov.pred_ids.size - tp, ov.gt_ids.size - tp, float(iou[matched].sum())
    return np.array([tp, fp, fn, sum_iou, *_pq_dq_sq(tp, fp, fn, sum_iou, empty_value), 1.0], np.float64)


def pq_from_stats(stats: np.ndarray, empty_value: float = 1.0) -> dict[str, float]:
    """Summed ``[8]`` stats -> pooled ``pq``, ``dq``, ``sq`` and per-image means ``*_per_image``."""
    tp, fp, fn, sum_iou, s_pq, s_dq, s_sq, n = stats
    pq, dq, sq = _pq_dq_sq(tp, fp, fn, sum_iou, empty_value)
    out = {"pq": pq, "dq": dq, "sq": sq}
    for key, total in (("pq", s_pq), ("dq", s_dq), ("sq", s_sq)):
        out[f"{key}_per_image"] = _ratio(total, n, empty_value, True)
    return out


def instance_classes(inst: np.ndarray, types: Mapping[int, int] | np.ndarray) -> np.ndarray:
    """``[K]`` int64 class of each instance of ``inst`` (ids ascending, as in :class:`Overlap`).

    ``types`` is either ``{id: class}`` (missing ids -> 0) or a type map of ``inst``'s shape, where an
    instance takes the most frequent nonzero type among its pixels (ties: lowest class; 0 only if all
    its pixels are 0, as in HoVer-Net). Class 0 means "untyped" and is left out of per-class stats.
    """
    labels, ids, _ = _relabel(inst)
    if isinstance(types, Mapping):
        return np.array([int(types.get(int(i), 0)) for i in ids], np.int64)
    type_flat = np.asarray(types).ravel().astype(np.int64)
    if type_flat.size != labels.size or (type_flat.size and type_flat.min() < 0):
        raise ValueError("the type map must have the instance map's shape and types >= 0")
    n_types = int(type_flat.max(initial=0)) + 1
    vote = (labels > 0) & (type_flat > 0)
    votes = np.bincount((labels[vote] - 1) * n_types + type_flat[vote], minlength=ids.size * n_types)
    return votes.reshape(ids.size, n_types).argmax(1).astype(np.int64)


def _class_counts(classes: np.ndarray, num_classes: int, weights: np.ndarray | None = None) -> np.ndarray:
    """``[C]`` count (or weight sum) of classes 1..C; class 0 (untyped) is dropped."""
    if classes.size and (classes.min() < 0 or classes.max() > num_classes):
        raise ValueError(f"classes must lie in 0..{num_classes}")
    return np.bincount(classes, weights=weights, minlength=num_classes + 1)[1:].astype(np.float64)


def class_pq_stats(
    ov: Overlap, gt_classes: np.ndarray, pred_classes: np.ndarray, num_classes: int, match_iou: float = 0.5
) -> np.ndarray:
    """Per-class PQ counts of one image -> ``[C, 4]`` :data:`CLASS_PQ_FIELDS`, row c-1 for class c.

    ``gt_classes`` ``[G]`` / ``pred_classes`` ``[P]`` align with ``ov.gt_ids`` / ``ov.pred_ids``
    (see :func:`instance_classes`). As CoNIC: class c is scored on the instances of class c only, so a
    match needs IoU > ``match_iou`` and equal classes.
    """
    _check_match_iou(match_iou)
    gt_c, pred_c = np.asarray(gt_classes, np.int64), np.asarray(pred_classes, np.int64)
    if gt_c.shape != ov.gt_ids.shape or pred_c.shape != ov.pred_ids.shape:
        raise ValueError("need one class per gt and per predicted instance")
    iou = ov.iou()
    pair_c = gt_c[ov.pair_gt]
    hit = (iou > match_iou) & (pair_c == pred_c[ov.pair_pred]) & (pair_c > 0)
    tp = _class_counts(pair_c[hit], num_classes)
    sum_iou = _class_counts(pair_c[hit], num_classes, iou[hit])
    fp = _class_counts(pred_c, num_classes) - tp
    fn = _class_counts(gt_c, num_classes) - tp
    return np.stack([tp, fp, fn, sum_iou], axis=1)


def mpq_from_stats(stats: np.ndarray, empty_value: float = 1.0) -> dict[str, float | np.ndarray]:
    """Summed ``[C, 4]`` stats -> ``pq_per_class`` ``[C]`` (pooled per class) and ``mpq``, their mean.

    Classes absent from the whole dataset (no gt, no prediction) show ``empty_value`` but are left out
    of ``mpq`` (CoNIC's epsilon would count them as 0); with no class present ``mpq = empty_value``.
    """
    pq = np.array([_pq_dq_sq(*row[:3], row[3], empty_value)[0] for row in stats])
    present = stats[:, :3].sum(1) > 0
    return {"pq_per_class": pq, "mpq": _mean(pq[present], empty_value)}


# ----------------------------------------------------------------------------- detection


def instance_centroids(inst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids ``[K]`` (ascending) and float64 centroids ``[K, ndim]`` (row, col, ...) of an instance map."""
    inst = np.asarray(inst)
    labels, ids, area = _relabel(inst)
    coords = [
        np.bincount(labels, weights=np.broadcast_to(grid, inst.shape).ravel(), minlength=ids.size + 1)[1:] / area
        for grid in np.ogrid[tuple(slice(n) for n in inst.shape)]
    ]
    return ids, np.stack(coords, axis=1) if ids.size else np.zeros((0, inst.ndim))


def match_centroids(gt_xy: np.ndarray, pred_xy: np.ndarray, max_dist: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs ``(gt_idx [M], pred_idx [M])`` of points within ``max_dist`` (inclusive).

    Hungarian assignment on Euclidean distance, gated: pairs beyond ``max_dist`` cost more than any
    set of in-range pairs, so it first maximises the number of matches, then minimises their total
    distance. (HoVer-Net's ``pair_coordinates`` assigns on raw distances and drops far pairs after,
    which can lose a match.) ``max_dist`` is in pixels and should scale with resolution: 6 px is
    HoVer-Net's choice for nuclei at 40x (~0.25 um/px), i.e. ~3 px at 20x.
    """
    gt_xy, pred_xy = np.asarray(gt_xy, np.float64), np.asarray(pred_xy, np.float64)
    empty = np.zeros(0, np.int64)
    if len(gt_xy) == 0 or len(pred_xy) == 0:
        return empty, empty
    dist = cdist(gt_xy, pred_xy)
    near = dist <= max_dist
    rows, cols = np.flatnonzero(near.any(1)), np.flatnonzero(near.any(0))  # only points with a candidate
    if rows.size == 0:
        return empty, empty
    sub = dist[np.ix_(rows, cols)]
    cost = np.where(sub <= max_dist, sub, (min(rows.size, cols.size) + 1) * max_dist + 1)
    r, c = linear_sum_assignment(cost)
    keep = sub[r, c] <= max_dist
    return rows[r[keep]], cols[c[keep]]


def detection_stats(gt_xy: np.ndarray, pred_xy: np.ndarray, max_dist: float = 6.0) -> np.ndarray:
    """Centroid detection counts of one image -> ``[3]`` :data:`DETECTION_FIELDS` (pooled over images)."""
    tp = match_centroids(gt_xy, pred_xy, max_dist)[0].size
    return np.array([tp, len(pred_xy) - tp, len(gt_xy) - tp], np.float64)


def detection_from_stats(stats: np.ndarray, empty_value: float = 1.0) -> dict[str, float]:
    """Summed ``[3]`` stats -> pooled ``precision``, ``recall``, ``f1``."""
    tp, fp, fn = stats
    nothing = tp + fp + fn == 0
    return {
        "precision": _ratio(tp, tp + fp, empty_value, nothing),
        "recall": _ratio(tp, tp + fn, empty_value, nothing),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, empty_value, nothing),
    }


def type_stats(
    gt_xy: np.ndarray,
    pred_xy: np.ndarray,
    gt_classes: np.ndarray,
    pred_classes: np.ndarray,
    num_classes: int,
    max_dist: float = 6.0,
) -> np.ndarray:
    """Classification-aware detection counts of one image -> ``[C, 5]`` :data:`TYPE_FIELDS`, row c-1 for class c.

    Over matched pairs: tp = both of class c, fp = predicted c but gt not c, fn = gt c but predicted
    not c; plus unmatched predictions / gt of class c (HoVer-Net's FP_d / FN_d for type c).
    """
    gt_c, pred_c = np.asarray(gt_classes, np.int64), np.asarray(pred_classes, np.int64)
    gi, pi = match_centroids(gt_xy, pred_xy, max_dist)
    mg, mp = gt_c[gi], pred_c[pi]
    same = mg == mp
    tp = _class_counts(mg[same], num_classes)
    fp = _class_counts(mp[~same], num_classes)
    fn = _class_counts(mg[~same], num_classes)
    unmatched_pred = _class_counts(pred_c, num_classes) - _class_counts(mp, num_classes)
    unmatched_gt = _class_counts(gt_c, num_classes) - _class_counts(mg, num_classes)
    return np.stack([tp, fp, fn, unmatched_pred, unmatched_gt], axis=1)


def type_f1_from_stats(
    stats: np.ndarray, mode: str = "matched", empty_value: float = 1.0
) -> dict[str, float | np.ndarray]:
    """Summed ``[C, 5]`` stats -> ``f1_per_class`` ``[C]`` and ``mean_f1`` over classes with a nonzero denominator.

    ``mode="matched"``: F1 over matched pairs only, ``2 tp / (2 tp + fp + fn)``.
    ``mode="hovernet"``: Graham et al.'s F_c with weights (2, 2, 1, 1):
    ``2 tp / (2 tp + 2 fp + 2 fn + unmatched_pred + unmatched_gt)``, which also charges detection errors.
    """
    if mode not in ("matched", "hovernet"):
        raise ValueError(f"mode must be 'matched' or 'hovernet', got {mode!r}")
    tp, fp, fn, up, ug = stats.T
    den = 2 * tp + fp + fn if mode == "matched" else 2 * tp + 2 * fp + 2 * fn + up + ug
    nothing = (tp + fp + fn + (0 if mode == "matched" else up + ug)) == 0
    f1 = np.array([_ratio(2 * t, d, empty_value, e) for t, d, e in zip(tp, den, nothing)])
    present = ~nothing
    return {"f1_per_class": f1, "mean_f1": _mean(f1[present], empty_value)}


# ----------------------------------------------------------------------------- patch classification


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, C]`` float64 counts, rows = target, cols = prediction; targets outside 0..C-1 are ignored."""
    pred, target = np.asarray(pred, np.int64).ravel(), np.asarray(target, np.int64).ravel()
    keep = (target >= 0) & (target < num_classes)  # ignore labels (e.g. -1, 255)
    pred, target = pred[keep], target[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted classes must lie in 0..{num_classes - 1}")
    counts = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.float64)


def classification_from_confusion(cm: np.ndarray, empty_value: float = 1.0) -> dict[str, float]:
    """Summed ``[C, C]`` confusion -> ``accuracy``, ``balanced_accuracy``, ``macro_f1``.

    Balanced accuracy: mean recall over classes present in the targets. Macro F1: mean F1 over classes
    present in targets or predictions (as scikit-learn's default labels).
    """
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    total = cm.sum()
    in_target, seen = support > 0, (support + predicted) > 0
    return {
        "accuracy": _ratio(tp.sum(), total, empty_value, True),
        "balanced_accuracy": _mean(tp[in_target] / support[in_target], empty_value),
        "macro_f1": _mean(2 * tp[seen] / (support + predicted)[seen], empty_value),
    }


# ----------------------------------------------------------------------------- all at once


def instance_metric_stats(
    gt: np.ndarray, pred: np.ndarray, match_iou: float = 0.5, max_dist: float = 6.0, empty_value: float = 1.0
) -> dict[str, np.ndarray]:
    """Per-image stats of Dice, AJI, AJI+, PQ and centroid detection, sharing one overlap computation."""
    ov = instance_overlap(gt, pred)
    return {
        "dice": dice_stats(ov, empty_value),
        "aji": aji_stats(ov, empty_value),
        "aji_plus": aji_plus_stats(ov, empty_value),
        "pq": pq_stats(ov, match_iou, empty_value),
        "detection": detection_stats(instance_centroids(gt)[1], instance_centroids(pred)[1], max_dist),
    }


def instance_metrics_from_stats(stats: Mapping[str, np.ndarray], empty_value: float = 1.0) -> dict[str, float]:
    """Summed :func:`instance_metric_stats` -> one flat dict of final values."""
    return {
        **dice_from_stats(stats["dice"], empty_value),
        **aji_from_stats(stats["aji"], empty_value),
        **aji_from_stats(stats["aji_plus"], empty_value, name="aji_plus"),
        **pq_from_stats(stats["pq"], empty_value),
        **detection_from_stats(stats["detection"], empty_value),
    }
