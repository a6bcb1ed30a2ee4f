"""vismtl.tasks.seed_growth against the definitions it replaces: scipy's transforms on the whole image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi

from seed_growth_reference import expand_whole_image, fill_holes_one_by_one
from vismtl.tasks import seed_growth
from vismtl.tasks.seed_growth import box_groups, expand_chessboard, fill_holes, label_boxes


def blobs(rng, shape, count: int, ids: int, largest: int = 9) -> np.ndarray:
    """Rectangles and discs of random ids (an id may come back elsewhere), some overlapping."""
    labels = np.zeros(shape, np.int32)
    for _ in range(count):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        size = int(rng.integers(1, largest))
        if rng.random() < 0.5:
            labels[y : y + size, x : x + size] = rng.integers(1, ids + 1)
        else:
            cv2.circle(labels, (int(x), int(y)), size, int(rng.integers(1, ids + 1)), -1)
    return labels


def test_label_boxes_are_those_of_find_objects() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = blobs(rng, (70, 90), int(rng.integers(0, 30)), 25)
        ids, boxes = label_boxes(labels)
        found = ndi.find_objects(labels)
        expected = [k for k, box in enumerate(found, 1) if box is not None]
        np.testing.assert_array_equal(ids, expected)
        for k, box in zip(ids, boxes):
            rows, cols = found[k - 1]
            assert tuple(box) == (rows.start, cols.start, rows.stop, cols.stop)
    huge = np.zeros((3, 4), np.int64)
    huge[1, 2:] = 10**12  # sparse ids: no table by id
    ids, boxes = label_boxes(huge)
    assert ids.tolist() == [10**12] and boxes.tolist() == [[1, 2, 2, 4]]


def test_box_groups_join_boxes_within_the_gap_transitively() -> None:
    boxes = np.array([[0, 0, 2, 2], [0, 5, 2, 7], [0, 10, 2, 12], [20, 0, 22, 2]])
    # pixels 4 apart (columns 1 and 5): joined at gap 4, not at 3; the chain joins the third
    assert box_groups(boxes, 4).tolist() == [0, 0, 0, 1]
    assert len(set(box_groups(boxes, 3).tolist())) == 4
    assert box_groups(boxes[:1], 3).tolist() == [0]


@pytest.mark.parametrize("distance", [1, 2, 5])
def test_expand_chessboard_equals_the_whole_image_transform(distance) -> None:
    rng = np.random.default_rng(10 + distance)
    for trial in range(12):
        # sparse blobs (regions alone), crowded ones (groups, ties), ids coming back far apart
        count = (4, 25, 120)[trial % 3]
        labels = blobs(rng, (100, 130), count, (40, 6)[trial % 2])
        grown = expand_chessboard(labels, distance)
        np.testing.assert_array_equal(grown, expand_whole_image(labels, distance))
        assert labels is not grown and (grown > 0).sum() > (labels > 0).sum()
    assert expand_chessboard(np.zeros((5, 5), np.int32), 3).max() == 0


def test_expand_chessboard_with_many_regions_equals_the_whole_image_transform(monkeypatch) -> None:
    """Beyond the ids whose boxes are compared pairwise, the groups come from the image's dilation."""
    monkeypatch.setattr(seed_growth, "_PAIRWISE_MAX", 10)
    rng = np.random.default_rng(3)
    labels = blobs(rng, (90, 110), 80, 60)
    before = labels.copy()
    np.testing.assert_array_equal(expand_chessboard(labels, 2), expand_whole_image(labels, 2))
    np.testing.assert_array_equal(labels, before)  # the input is left alone


def test_fill_holes_equals_scipy_object_by_object() -> None:
    rng = np.random.default_rng(5)
    for trial in range(30):
        labels = np.zeros((60, 70), np.int32)
        for k in range(int(rng.integers(1, 8))):  # rings, some nested, some cut by the image's edge
            y, x = rng.integers(-5, 65), rng.integers(-5, 75)
            radius = int(rng.integers(3, 20))
            cv2.circle(labels, (int(x), int(y)), radius, k + 1, int(rng.integers(1, 4)))
        labels[rng.random(labels.shape) < 0.02] = rng.integers(1, 9)  # specks, inside holes too
        np.testing.assert_array_equal(fill_holes(labels), fill_holes_one_by_one(labels), err_msg=f"trial {trial}")
    frame = np.ones((9, 9), np.int32)  # an object spanning the image: its hole touches no border
    frame[3:6, 3:6] = 0
    frame[4, 4] = 2  # an object in the hole is kept
    filled = fill_holes(frame)
    assert filled[4, 4] == 2 and (filled[3:6, 3:6][filled[3:6, 3:6] != 2] == 1).all()
    np.testing.assert_array_equal(filled, fill_holes_one_by_one(frame))


def test_nested_holes_take_the_lower_id() -> None:
    labels = np.zeros((15, 15), np.int32)
    cv2.rectangle(labels, (1, 1), (13, 13), 1, 1)  # outer ring, id 1
    cv2.rectangle(labels, (4, 4), (10, 10), 2, 1)  # inner ring, id 2, in 1's hole
    filled = fill_holes(labels)
    assert filled[7, 7] == 1 and filled[2, 2] == 1  # the inner hole is also in 1's hole
    np.testing.assert_array_equal(filled, fill_holes_one_by_one(labels))
