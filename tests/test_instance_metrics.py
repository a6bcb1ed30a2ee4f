"""Hand-computed values for vismtl.tasks.instance_metrics (Dice, AJI, AJI+, PQ, detection, patch scores)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vismtl.tasks.instance_metrics import (
    aji_from_stats,
    aji_plus_stats,
    aji_stats,
    class_pq_stats,
    classification_from_confusion,
    confusion_matrix,
    detection_from_stats,
    detection_stats,
    dice_from_stats,
    dice_stats,
    instance_centroids,
    instance_classes,
    instance_metric_stats,
    instance_metrics_from_stats,
    instance_overlap,
    match_centroids,
    mpq_from_stats,
    pq_from_stats,
    pq_stats,
    type_f1_from_stats,
    type_stats,
)


def box(shape: tuple[int, int], *boxes: tuple[int, int, int, int, int]) -> np.ndarray:
    """Instance map with ``(id, r0, r1, c0, c1)`` rectangles ``[r0:r1, c0:c1]``."""
    inst = np.zeros(shape, np.int64)
    for i, r0, r1, c0, c1 in boxes:
        inst[r0:r1, c0:c1] = i
    return inst


# 6 x 6, ids 1 / 2 in gt and 1 / 2 / 3 in pred:
#   gt1 rows 0-1 cols 0-1 (4 px)   p1 rows 0-1 cols 0-2 (6 px): inter 4, union 6, IoU 2/3
#   gt2 rows 3-5 cols 3-5 (9 px)   p2 rows 3-4 cols 3-5 (6 px): inter 6, union 9, IoU 2/3
#                                  p3 row 5 cols 0-1 (2 px): overlaps nothing
BASIC_GT = [(1, 0, 2, 0, 2), (2, 3, 6, 3, 6)]
BASIC_PRED = [(1, 0, 2, 0, 3), (2, 3, 5, 3, 6), (3, 5, 6, 0, 2)]


def basic(gt_ids=(1, 2), pred_ids=(1, 2, 3)) -> tuple[np.ndarray, np.ndarray]:
    gt = box((6, 6), *[(i, *b[1:]) for i, b in zip(gt_ids, BASIC_GT)])
    pred = box((6, 6), *[(i, *b[1:]) for i, b in zip(pred_ids, BASIC_PRED)])
    return gt, pred


def check_basic(gt: np.ndarray, pred: np.ndarray) -> None:
    ov = instance_overlap(gt, pred)
    # Dice: I = 4 + 6 = 10, P = 6 + 6 + 2 = 14, G = 4 + 9 = 13 -> 20 / 27
    np.testing.assert_allclose(dice_stats(ov), [10, 14, 13, 20 / 27, 1])
    # AJI: C = 4 + 6 = 10; U = 6 + 9 + 2 (p3 never taken) = 17. AJI+ pairs the same way.
    np.testing.assert_allclose(aji_stats(ov), [10, 17, 10 / 17, 1])
    np.testing.assert_allclose(aji_plus_stats(ov), [10, 17, 10 / 17, 1])
    # PQ: tp 2, fp 1 (p3), fn 0, sum IoU 4/3; DQ = 2 / (2 + 1/2) = 0.8, SQ = 2/3, PQ = 8/15
    stats = pq_stats(ov)
    np.testing.assert_allclose(stats, [2, 1, 0, 4 / 3, 8 / 15, 0.8, 2 / 3, 1])
    assert pq_from_stats(stats) == pytest.approx(dict(pq=8 / 15, dq=0.8, sq=2 / 3, **per_image(8 / 15, 0.8, 2 / 3)))
    # centroids: gt1 (0.5, 0.5) - p1 (0.5, 1), gt2 (4, 4) - p2 (3.5, 4); p3 (5, 0.5) is left over
    np.testing.assert_allclose(detection_stats(instance_centroids(gt)[1], instance_centroids(pred)[1]), [2, 1, 0])


def per_image(pq: float, dq: float, sq: float) -> dict[str, float]:
    return dict(pq_per_image=pq, dq_per_image=dq, sq_per_image=sq)


def test_basic_hand_computed() -> None:
    check_basic(*basic())


def test_non_contiguous_ids_both_relabel_paths() -> None:
    # 1_000_000 is far above the map size: the ids go through np.unique instead of a lookup table
    gt, pred = basic(gt_ids=(3, 17), pred_ids=(40, 5, 1_000_000))
    check_basic(gt, pred)
    ov = instance_overlap(gt, pred)
    assert ov.gt_ids.tolist() == [3, 17] and ov.pred_ids.tolist() == [5, 40, 1_000_000]
    assert ov.gt_area.tolist() == [4, 9] and ov.pred_area.tolist() == [6, 6, 2]


def test_aji_and_aji_plus_differ_when_one_prediction_covers_two_objects() -> None:
    # gt1 rows 0-1 cols 0-2, gt2 rows 0-1 cols 3-5 (6 px each); p1 covers both (12 px): IoU 1/2 each
    gt = box((6, 6), (1, 0, 2, 0, 3), (2, 0, 2, 3, 6))
    pred = box((6, 6), (1, 0, 2, 0, 6))
    ov = instance_overlap(gt, pred)
    # AJI: both gt take p1: C = 6 + 6 = 12, U = 12 + 12 = 24 -> 1/2
    np.testing.assert_allclose(aji_stats(ov), [12, 24, 0.5, 1])
    # AJI+: p1 pairs with one gt only: C = 6, U = 12 + 6 (other gt unpaired) = 18 -> 1/3
    np.testing.assert_allclose(aji_plus_stats(ov), [6, 18, 1 / 3, 1])
    # PQ: IoU 0.5 is no match: tp 0, fp 1, fn 2 -> PQ = DQ = SQ = 0; Dice is perfect (12 / 12)
    np.testing.assert_allclose(pq_stats(ov), [0, 1, 2, 0, 0, 0, 0, 1])
    assert dice_from_stats(dice_stats(ov))["dice"] == 1.0


def test_aji_plus_assignment_maximises_total_iou_not_aji() -> None:
    # one row: g1 cols 0-9 (10 px), g2 cols 10-13 (4 px); p2 cols 0-2 (3 px), p1 cols 3-12 (10 px)
    #   g1-p1: inter 7, union 13 (IoU .538)   g1-p2: inter 3, union 10 (IoU .3)
    #   g2-p1: inter 3, union 11 (IoU .273)
    gt = box((1, 16), (1, 0, 1, 0, 10), (2, 0, 1, 10, 14))
    pred = box((1, 16), (2, 0, 1, 0, 3), (1, 0, 1, 3, 13))
    ov = instance_overlap(gt, pred)
    # Hungarian: g1-p2 + g2-p1 (IoU .3 + .273 = .573 > .538 of g1-p1 alone): C = 3 + 3, U = 10 + 11 = 21
    # (a greedy best-IoU-first pairing would take g1-p1: C = 7, U = 13 + 4 + 3 = 20)
    np.testing.assert_allclose(aji_plus_stats(ov), [6, 21, 2 / 7, 1])
    # AJI: both gt take p1: C = 7 + 3 = 10, U = 13 + 11 + 3 (p2 never taken) = 27
    np.testing.assert_allclose(aji_stats(ov), [10, 27, 10 / 27, 1])


def test_edge_cases_every_metric() -> None:
    zero, one = np.zeros((4, 4), np.int64), box((4, 4), (1, 0, 2, 0, 2))  # one 4-px object
    cases = {
        # (gt, pred): dice stats, aji stats, pq stats, detection stats, final value of every ratio
        "nothing": (zero, zero, [0, 0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0], 1.0),
        "no_pred": (one, zero, [0, 0, 4, 0, 1], [0, 4, 0, 1], [0, 0, 1, 0, 0, 0, 0, 1], [0, 0, 1], 0.0),
        "no_gt": (zero, one, [0, 4, 0, 0, 1], [0, 4, 0, 1], [0, 1, 0, 0, 0, 0, 0, 1], [0, 1, 0], 0.0),
    }
    for name, (gt, pred, dice, aji, pq, det, value) in cases.items():
        stats = instance_metric_stats(gt, pred)
        np.testing.assert_array_equal(stats["dice"], dice, err_msg=name)
        np.testing.assert_array_equal(stats["aji"], aji, err_msg=name)
        np.testing.assert_array_equal(stats["aji_plus"], aji, err_msg=name)
        np.testing.assert_array_equal(stats["pq"], pq, err_msg=name)
        np.testing.assert_array_equal(stats["detection"], det, err_msg=name)
        final = instance_metrics_from_stats(stats)
        assert set(final.values()) == {value}, (name, final)
    # the empty-image convention is configurable (HoVer-Net / CoNIC epsilons give 0)
    assert dice_stats(instance_overlap(zero, zero), empty_value=0.0)[3] == 0.0
    assert pq_from_stats(np.zeros(8), empty_value=0.0)["pq"] == 0.0
    assert detection_from_stats(np.zeros(3), empty_value=0.0)["f1"] == 0.0


def test_pooled_and_per_image_differ() -> None:
    # image A: one 16-px object found exactly; image B: one 4-px object, nothing predicted
    a = box((4, 4), (1, 0, 4, 0, 4))
    b_gt, b_pred = box((4, 4), (1, 0, 2, 0, 2)), np.zeros((4, 4), np.int64)
    total = {k: instance_metric_stats(a, a)[k] + instance_metric_stats(b_gt, b_pred)[k] for k in ("dice", "aji", "pq")}
    final = instance_metrics_from_stats({**total, "aji_plus": total["aji"], "detection": np.zeros(3)})
    # Dice pooled 2 * 16 / (16 + 20) = 8/9, per image (1 + 0) / 2
    assert final["dice"] == pytest.approx(8 / 9) and final["dice_per_image"] == 0.5
    # AJI pooled (16 + 0) / (16 + 4) = 0.8, per image 0.5
    assert final["aji"] == pytest.approx(0.8) and final["aji_per_image"] == 0.5
    # PQ pooled: tp 1, fn 1, IoU 1: DQ = 1 / 1.5, SQ = 1, PQ = 2/3; per image (1 + 0) / 2 each
    assert final["pq"] == pytest.approx(2 / 3) and final["dq"] == pytest.approx(2 / 3) and final["sq"] == 1.0
    assert final["pq_per_image"] == final["dq_per_image"] == final["sq_per_image"] == 0.5


def test_pq_match_is_strictly_above_half() -> None:
    gt = box((12, 12), (1, 0, 10, 0, 10))  # 100 px
    half = box((12, 12), (1, 0, 5, 0, 10))  # 50 px inside: IoU 50 / 100 = 0.5 -> no match
    np.testing.assert_allclose(pq_stats(instance_overlap(gt, half))[:4], [0, 1, 1, 0])
    more = half.copy()
    more[5, 0] = 1  # 51 px inside: IoU 0.51 -> match; PQ = 0.51 / (1 + 0) = 0.51
    stats = pq_stats(instance_overlap(gt, more))
    np.testing.assert_allclose(stats, [1, 0, 0, 0.51, 0.51, 1, 0.51, 1])
    with pytest.raises(ValueError):
        pq_stats(instance_overlap(gt, more), match_iou=0.4)


def test_class_pq_with_majority_vote_types() -> None:
    # 8 x 8: g1 rows 0-2 cols 0-2, g2 rows 5-7 cols 5-7, g3 rows 0-2 cols 5-7 (9 px each)
    gt = box((8, 8), (1, 0, 3, 0, 3), (2, 5, 8, 5, 8), (3, 0, 3, 5, 8))
    types = np.zeros((8, 8), np.int64)
    types[0:2, 0:2] = 1  # g1: 4 px of class 1, 5 px of 0 -> class 1 (background never votes)
    types[5:8, 5:8] = 1
    types[5:7, 5:8] = 2  # g2: 6 px of class 2, 3 px of class 1 -> class 2
    types[0:3, 5:8] = 2  # g3: class 2
    gt_c = instance_classes(gt, types)
    assert gt_c.tolist() == [1, 2, 2]
    # pred: p1 = g1, p2 = g2 (IoU 1 each), p3 rows 0-1 cols 5-7 (6 px, IoU 6/9 with g3)
    pred = box((8, 8), (10, 0, 3, 0, 3), (20, 5, 8, 5, 8), (30, 0, 2, 5, 8))
    pred_c = instance_classes(pred, {10: 1, 20: 1, 30: 2})
    stats = class_pq_stats(instance_overlap(gt, pred), gt_c, pred_c, num_classes=3)
    # class 1: gt {g1}, pred {p1, p2}: g1-p1 IoU 1 -> tp 1, fp 1 (p2), fn 0 -> PQ = 1 / 1.5 = 2/3
    # class 2: gt {g2, g3}, pred {p3}: g3-p3 IoU 2/3 -> tp 1, fp 0, fn 1 (g2) -> PQ = (2/3) / 1.5 = 4/9
    # class 3: absent -> shown as 1.0, left out of mPQ = (2/3 + 4/9) / 2 = 5/9
    np.testing.assert_allclose(stats, [[1, 1, 0, 1], [1, 0, 1, 2 / 3], [0, 0, 0, 0]])
    result = mpq_from_stats(stats)
    np.testing.assert_allclose(result["pq_per_class"], [2 / 3, 4 / 9, 1.0])
    assert result["mpq"] == pytest.approx(5 / 9)


def test_detection_distance_threshold() -> None:
    gt = [[10.0, 10.0]]
    np.testing.assert_array_equal(detection_stats(gt, [[10.0, 15.0]], max_dist=6), [1, 0, 0])  # 5 px
    np.testing.assert_array_equal(detection_stats(gt, [[10.0, 17.0]], max_dist=6), [0, 1, 1])  # 7 px
    # the same from instance maps: single pixels at (10, 10) and (10, 15)
    gt_map, pred_map = np.zeros((20, 20), np.int64), np.zeros((20, 20), np.int64)
    gt_map[10, 10], pred_map[10, 15] = 4, 9
    ids, xy = instance_centroids(pred_map)
    assert ids.tolist() == [9] and xy.tolist() == [[10.0, 15.0]]
    final = detection_from_stats(detection_stats(instance_centroids(gt_map)[1], xy))
    assert final == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_detection_hungarian_beats_greedy() -> None:
    # on a line: gt at 0 and 8, pred at 5 and 13 (max 6 px)
    # greedy nearest-first takes (pred 5, gt 8) at 3 px, then pred 13 - gt 0 is 13 px: 1 match
    # the assignment takes (gt 0, pred 5) and (gt 8, pred 13), 5 px each: 2 matches
    gt, pred = [[0.0, 0.0], [0.0, 8.0]], [[0.0, 5.0], [0.0, 13.0]]
    gi, pi = match_centroids(gt, pred, max_dist=6)
    assert sorted(zip(gi.tolist(), pi.tolist())) == [(0, 0), (1, 1)]
    np.testing.assert_array_equal(detection_stats(gt, pred), [2, 0, 0])


def test_type_f1_matched_and_hovernet() -> None:
    # gt (0,0) c1, (0,20) c2, (0,40) c1; pred (0,1) c1, (0,21) c1, (0,60) c2
    # pairs: g0-p0 (c1, c1), g1-p1 (gt c2, pred c1); g2 (c1) and p2 (c2) unmatched
    gt, pred = [[0, 0], [0, 20], [0, 40]], [[0, 1], [0, 21], [0, 60]]
    stats = type_stats(gt, pred, [1, 2, 1], [1, 1, 2], num_classes=2)
    # class 1: tp 1, fp 1, fn 0, unmatched pred 0, unmatched gt 1; class 2: tp 0, fp 0, fn 1, 1, 0
    np.testing.assert_array_equal(stats, [[1, 1, 0, 0, 1], [0, 0, 1, 1, 0]])
    # matched: c1 2 / (2 + 1) = 2/3, c2 0 -> mean 1/3
    matched = type_f1_from_stats(stats)
    np.testing.assert_allclose(matched["f1_per_class"], [2 / 3, 0])
    # hovernet: c1 2 / (2 + 2 + 0 + 0 + 1) = 2/5, c2 0 / (2 + 1) = 0
    hover = type_f1_from_stats(stats, mode="hovernet")
    np.testing.assert_allclose(hover["f1_per_class"], [0.4, 0])
    assert hover["mean_f1"] == pytest.approx(0.2)
    # detection: tp 2, fp 1, fn 1 -> P = R = F1 = 2/3
    assert detection_from_stats(detection_stats(gt, pred)) == pytest.approx(
        dict(precision=2 / 3, recall=2 / 3, f1=2 / 3)
    )


def test_balanced_accuracy_on_imbalanced_classes() -> None:
    target = np.repeat([0, 1], [90, 10])
    pred = np.zeros(100, np.int64)  # always the majority class
    cm = confusion_matrix(pred, target, num_classes=2)
    np.testing.assert_array_equal(cm, [[90, 0], [10, 0]])
    result = classification_from_confusion(cm)
    # accuracy 90/100; balanced (90/90 + 0/10) / 2; F1: c0 2*90 / (90 + 100) = 18/19, c1 0 -> 9/19
    assert result == pytest.approx(dict(accuracy=0.9, balanced_accuracy=0.5, macro_f1=9 / 19))
    # ignore labels drop out of the counts
    np.testing.assert_array_equal(confusion_matrix([0, 1, 1], [0, 255, -1], 2), [[1, 0], [0, 0]])


def test_aji_from_stats_names() -> None:
    assert aji_from_stats(np.array([1.0, 2.0, 0.5, 1.0]), name="aji_plus") == {
        "aji_plus": 0.5,
        "aji_plus_per_image": 0.5,
    }


def nuclei_maps(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """512 x 512 gt / pred with 300 discs (radius 7-10) on a jittered grid; pred shifted and relabelled."""
    yy, xx = np.mgrid[:512, :512]
    gt, pred = np.zeros((512, 512), np.int64), np.zeros((512, 512), np.int64)
    centres = np.stack(np.meshgrid(np.arange(15) * 34 + 17, np.arange(20) * 25 + 12), -1).reshape(-1, 2)
    pred_ids = rng.permutation(300) * 7 + 3  # non-contiguous, shuffled
    for k, (r, c) in enumerate(centres[:, ::-1] + rng.integers(-2, 3, (300, 2))):
        rad = rng.integers(7, 11)
        window = (slice(max(r - 12, 0), r + 12), slice(max(c - 12, 0), c + 12))
        d = (yy[window] - r) ** 2 + (xx[window] - c) ** 2
        gt[window][d <= rad**2] = k + 1
        if k % 10:  # every tenth nucleus is missed
            dp = (yy[window] - r - 1) ** 2 + (xx[window] - c - 2) ** 2
            pred[window][dp <= (rad - 1) ** 2] = pred_ids[k]
    return gt, pred


def test_timing_300_nuclei() -> None:
    gt, pred = nuclei_maps(np.random.default_rng(0))
    assert np.unique(gt).size == 301
    start = time.perf_counter()
    stats = instance_metric_stats(gt, pred)
    cls = instance_classes(gt, (gt % 3) * (gt > 0))
    class_pq_stats(instance_overlap(gt, pred), cls, instance_classes(pred, gt % 3), num_classes=2)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, elapsed
    assert stats["pq"][:3].tolist() == [270, 0, 30]  # each found nucleus matches, missed ones are fn
    assert stats["detection"].tolist() == [270, 0, 30]
