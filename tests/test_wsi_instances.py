"""Chunked instance extraction: every object exactly once and whole; GeoJSON output valid for QuPath."""

from __future__ import annotations

import dataclasses
import json
import math
import uuid

import numpy as np
import pytest
import shapely
from shapely import affinity
from shapely.geometry import Polygon
from skimage.draw import disk, ellipse
from skimage.measure import label as relabel

from vismtl.wsi.geojson import (
    chunk_part,
    feature,
    feature_text,
    features_text,
    measurements,
    validate_feature_collection,
    write_geojson,
)
from vismtl.wsi.instances import (
    Instance,
    ObjectTable,
    _object_ids,
    assemble,
    extract_chunk,
    polygon_from_mask,
)

SHAPE = (700, 900)
CHUNK = 256
MARGIN = 40  # > largest object diameter (2 * 18 + 1)


def _slide(seed: int = 0, count: int = 80) -> np.ndarray:
    """Non-overlapping ellipses (radius 5-18), several centred on chunk borders, corners and slide edges."""
    rng = np.random.default_rng(seed)
    slide = np.zeros(SHAPE, np.int32)
    forced = [(CHUNK * i, CHUNK * j) for i in (1, 2) for j in (1, 2, 3)]  # chunk corners
    forced += [(CHUNK, 100), (2 * CHUNK, 600), (400, CHUNK), (150, 3 * CHUNK), (2, 300), (600, 898)]
    k = 0
    while k < count:
        centre = forced[k] if k < len(forced) else (rng.integers(0, SHAPE[0]), rng.integers(0, SHAPE[1]))
        radii = rng.integers(5, 19, size=2)
        rotation = rng.uniform(0, np.pi)
        guard = ellipse(*centre, radii[0] + 2, radii[1] + 2, shape=SHAPE, rotation=rotation)
        if slide[guard].any():
            continue  # keep a gap so objects never touch
        k += 1
        slide[ellipse(*centre, *radii, shape=SHAPE, rotation=rotation)] = k
    return slide


def _chunks(shape: tuple[int, int], chunk: int, margin: int):
    """(cut-out slices, core in cut-out coordinates, origin (x, y)) for each chunk of the grid."""
    for y in range(0, shape[0], chunk):
        for x in range(0, shape[1], chunk):
            ay0, ax0 = max(y - margin, 0), max(x - margin, 0)
            ay1, ax1 = min(y + chunk + margin, shape[0]), min(x + chunk + margin, shape[1])
            core = (y - ay0, x - ax0, min(y + chunk, shape[0]) - ay0, min(x + chunk, shape[1]) - ax0)
            yield (slice(ay0, ay1), slice(ax0, ax1)), core, (ax0, ay0)


CLASSES = ("bg", "tumour", "immune")


def _run(
    slide: np.ndarray,
    margin: int = MARGIN,
    scale: float = 1.0,
    mpp: float | None = 0.25,
    chunk: int = CHUNK,
    batch: int = 4096,
    types: np.ndarray | None = None,
) -> list[Instance]:
    """Per-chunk post-processing stand-in: relabel each cut-out so ids differ from chunk to chunk;
    then the objects crossing chunk borders put together from their pieces, as at a slide's end.
    ``types``: each pixel's type (default: each object's pixels all of its id's class, mod 3)."""
    rng = np.random.default_rng(1)
    out, pieces = [], []
    for box, core, origin in _chunks(slide.shape, chunk, margin):
        local = relabel(slide[box], background=0)
        shuffled = np.concatenate([[0], rng.permutation(local.max()) + 7])[local]
        painted = np.where(shuffled > 0, slide[box] % 3, 0) if types is None else types[box]
        result = extract_chunk(shuffled, core, origin, scale, mpp, "nuclei", painted, CLASSES)
        if margin >= 40:
            assert not any(p.cut for p in result.pieces), "the margin is larger than every object: nothing may be cut"
        out += result.instances
        pieces += result.pieces
    assembled = assemble(pieces, chunk, scale, mpp, "nuclei", CLASSES, batch=batch)
    assert assembled.cut == 0 or margin < 40
    return out + assembled.instances


def _rasterise(instance: Instance, scale: float = 1.0) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Pixels (of the slide grid) whose centres lie inside the polygon."""
    polygon = affinity.scale(Polygon(instance.polygon), 1 / scale, 1 / scale, origin=(0, 0))
    x0, y0, x1, y1 = (int(v) for v in polygon.bounds)
    ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
    return shapely.contains_xy(polygon, xs, ys), (slice(y0, y1), slice(x0, x1))


@pytest.fixture(scope="module")
def slide() -> np.ndarray:
    return _slide()


@pytest.fixture(scope="module")
def found(slide) -> list[Instance]:
    return _run(slide)


def _check_against_truth(slide: np.ndarray, instances: list[Instance], scale: float) -> None:
    matched = []
    for instance in instances:
        mask, box = _rasterise(instance, scale)
        ids = np.unique(slide[box][mask])
        assert ids.size == 1 and ids[0] > 0, "a polygon covers background or several objects"
        truth = slide == ids[0]
        inside = np.zeros_like(truth)
        inside[box] = mask
        assert (truth & inside).sum() / (truth | inside).sum() > 0.9
        assert instance.area_px == truth.sum()
        matched.append(int(ids[0]))
    assert sorted(matched) == list(range(1, slide.max() + 1)), "objects lost or duplicated"


def test_every_object_once_and_whole(slide, found):
    assert len(found) == slide.max() == 80
    assert len({i.id for i in found}) == len(found)
    for instance in found:
        ring = instance.polygon
        assert ring.dtype == np.int64 and ring.shape[1] == 2 and len(ring) >= 4  # scale 1: integer vertices
        assert np.array_equal(ring[0], ring[-1]) and Polygon(ring).is_valid
        assert instance.perimeter_px == Polygon(ring).length  # integer vertices: exact
    _check_against_truth(slide, found, scale=1.0)


def test_a_fractional_scale_gives_vertices_to_a_thousandth_of_a_pixel(slide, found):
    """A slide at 0.499 um/px read at 0.5: level-0 scale 1.002..., vertices rounded to 0.001."""
    scale = 0.5 / 0.499
    by_id = {i.id: i for i in _run(slide, scale=scale)}
    assert by_id.keys() == {i.id for i in found}
    for instance in found:
        ring = by_id[instance.id].polygon
        assert ring.dtype == np.float64 and np.array_equal(ring, np.round(instance.polygon * scale, 3))
        # rounding moves each edge by at most 0.0005 px
        area_error = abs(Polygon(ring).area - instance.area_px * scale**2)
        assert Polygon(ring).is_valid and area_error <= 0.0005 * instance.perimeter_px * scale
        assert by_id[instance.id].perimeter_px == pytest.approx(instance.perimeter_px * scale)  # from exact vertices


def test_scale_two_scales_coordinates(slide, found):
    doubled = _run(slide, scale=2.0)
    by_id = {i.id: i for i in doubled}
    assert by_id.keys() == {i.id for i in found}  # ids depend on the output grid only
    for instance in found:
        twin = by_id[instance.id]
        assert np.array_equal(twin.polygon, 2 * instance.polygon)
        assert twin.perimeter_px == 2 * instance.perimeter_px
        assert twin.centroid == pytest.approx((2 * instance.centroid[0], 2 * instance.centroid[1]), abs=0.0015)
        assert twin.area_px == instance.area_px
        assert twin.area_um2 == pytest.approx(4 * instance.area_um2)
    _check_against_truth(slide, doubled, scale=2.0)


def test_objects_larger_than_the_margin_are_reported_and_put_together():
    slide = np.zeros((512, 256), np.int32)
    slide[disk((CHUNK, 100), 15)] = 1  # straddles the horizontal chunk border
    for margin, cut in ((5, [1, 1]), (40, [0, 0])):
        chunks = list(_chunks(slide.shape, CHUNK, margin))
        results = [extract_chunk(slide[box], core, origin, 1.0, None, "nuclei") for box, core, origin in chunks]
        assert [sum(p.cut for p in r.pieces) for r in results] == cut
        assert [len(r.instances) for r in results] == [0, 0]  # it crosses the border: a piece in each chunk
        assert [len(r.pieces) for r in results] == [1, 1]
        assembled = assemble([p for r in results for p in r.pieces], CHUNK, 1.0, None, "nuclei")
        (whole,) = assembled.instances
        assert whole.area_px == slide.sum() and assembled.cut == max(cut)  # one object, seen in part or not
        assert whole.class_share is None and "Class pixel share" not in measurements(whole)  # untyped


def _large_objects(seed: int = 3) -> np.ndarray:
    """Ellipses far larger than the margin (radii 20-150), touching, nested in concave shapes, several
    across chunk corners, and some at the slide's edges."""
    rng = np.random.default_rng(seed)
    slide = np.zeros(SHAPE, np.int32)
    k = 0
    for _ in range(60):
        centre = rng.integers(0, SHAPE[0]), rng.integers(0, SHAPE[1])
        radii = rng.integers(20, 150, size=2)
        pixels = ellipse(*centre, *radii, shape=SHAPE, rotation=rng.uniform(0, np.pi))
        free = slide[pixels] == 0
        if free.sum() > 50:
            k += 1
            slide[pixels[0][free], pixels[1][free]] = k  # over what is free: objects touch, some wrap others
    return relabel(slide, background=0, connectivity=2)  # one 8-connected piece per id


@pytest.mark.parametrize("scale", [1.0, 0.5 / 0.499])
def test_objects_larger_than_the_margin_come_out_as_the_whole_slide_gives_them(scale):
    """Chunks of 128 px with margins of 8 against the slide as one chunk: the same objects, bit for bit
    (ids, outlines, areas, centroids, perimeters, classes)."""
    slide = _large_objects()
    assert slide.max() > 30
    whole = _run(slide, margin=slide.shape[0], scale=scale, chunk=max(SHAPE))  # one chunk: nothing crosses
    chunked = _run(slide, margin=8, scale=scale, chunk=128, batch=5)  # objects laid out 5 at a time
    assert len(chunked) == len(whole) == slide.max()
    by_id = {i.id: i for i in chunked}
    for reference in whole:
        found = by_id[reference.id]
        assert np.array_equal(found.polygon, reference.polygon)
        assert (found.area_px, found.perimeter_px, found.class_name) == (
            reference.area_px,
            reference.perimeter_px,
            reference.class_name,
        )
        assert found.centroid == pytest.approx(reference.centroid, abs=1e-9)
    assert sorted(i.area_px for i in chunked) == sorted(np.bincount(slide.ravel())[1:].tolist())


def _mixed_types(slide: np.ndarray, seed: int = 4) -> np.ndarray:
    """Each object pixel of type 1 or 2, type 2 with a chance of the object's own in [0.4, 0.6]:
    majorities that counting some pixels twice (a margin's) or none would flip."""
    rng = np.random.default_rng(seed)
    chance = rng.uniform(0.4, 0.6, slide.max() + 1)
    return np.where(slide > 0, 1 + (rng.random(slide.shape) < chance[slide]), 0)


def test_an_object_takes_the_type_most_of_its_pixels_have_and_measures_their_share():
    """Types decided per pixel, nearly half and half in each object: every object, within one chunk or
    put together from pieces of up to 9 (chunks of 128 px, margins of 8), has the type most of its
    pixels have over the whole object (ties to the smaller) and "Class pixel share", the fraction
    of its pixels of that type, in its Feature."""
    slide = _large_objects()
    types = _mixed_types(slide)
    counts = np.zeros((slide.max() + 1, 3), np.int64)
    np.add.at(counts, (slide.ravel(), types.ravel()), 1)
    rows, cols = np.nonzero(slide)
    labels = slide[rows, cols]
    areas = np.bincount(labels)
    sums = np.stack([np.bincount(labels, cols + 0.5), np.bincount(labels, rows + 0.5)], axis=1)
    centres = sums / areas[:, None].clip(1)
    label_of = {(int(areas[k]), *np.round(centres[k], 3).tolist()): k for k in range(1, slide.max() + 1)}
    found = _run(slide, margin=8, chunk=128, batch=5, types=types)
    assert len(found) == slide.max() and 0 < sum(counts[1:, 1] == counts[1:, 2])  # ties among them
    for instance in found:
        k = label_of[(int(instance.area_px), *instance.centroid)]
        expected = 2 if counts[k, 2] > counts[k, 1] else 1
        assert (instance.class_id, instance.class_name) == (expected, CLASSES[expected])
        assert instance.class_share == counts[k, expected] / areas[k]
        assert measurements(instance)["Class pixel share"] == round(counts[k, expected] / areas[k], 4)
    shares = [i.class_share for i in found]
    assert min(shares) >= 0.5 and max(shares) < 1  # counted, not 1 for all


def test_a_piece_holds_its_objects_pixels_in_the_core_and_links_outside_it():
    """extract_chunk's pieces, against a scan of the chunk: each crossing object's pixels in the core
    (the piece's mask, placed on the output grid) and, in each margin strip it reaches, its first
    pixel in raster order (a link)."""
    slide = _large_objects()
    checked = 0
    for box, core, origin in _chunks(slide.shape, 128, 8):
        labels = slide[box]
        y0, x0, y1, x1 = core
        in_core = np.zeros(labels.shape, bool)
        in_core[y0:y1, x0:x1] = True
        crossing = sorted(set(np.unique(labels[in_core])) & set(np.unique(labels[~in_core])) - {0})
        pieces = extract_chunk(labels, core, origin, 1.0, None, "nuclei").pieces
        assert len(pieces) == len(crossing)
        for piece, label in zip(pieces, crossing):
            rows, cols = np.nonzero((labels == label) & in_core)
            assert (piece.top, piece.left) == (rows.min() + origin[1], cols.min() + origin[0])
            expected = np.zeros(piece.mask.shape, bool)
            expected[rows - rows.min(), cols - cols.min()] = True
            np.testing.assert_array_equal(piece.mask, expected)
            links = []
            for strip_rows in (slice(0, y0), slice(y0, y1), slice(y1, labels.shape[0])):
                for strip_cols in (slice(0, x0), slice(x0, x1), slice(x1, labels.shape[1])):
                    if (strip_rows, strip_cols) != (slice(y0, y1), slice(x0, x1)):
                        found = np.argwhere(labels[strip_rows, strip_cols] == label)
                        if found.size:
                            links.append(
                                (found[0][0] + strip_rows.start + origin[1], found[0][1] + strip_cols.start + origin[0])
                            )
            assert piece.links.tolist() == [list(link) for link in links]
            checked += 1
    assert checked > 20


def test_geojson_round_trip(tmp_path, found):
    path = tmp_path / "nuclei.geojson"
    assert write_geojson(path, found, {"tumour": (200, 0, 0)}) == len(found)
    data = json.loads(path.read_text())
    assert validate_feature_collection(data) == []
    assert len(data["features"]) == len(found)
    props = data["features"][0]["properties"]
    assert props["objectType"] == "detection" and props["isLocked"] is False
    assert {"Area µm^2", "Perimeter px", "Centroid X px", "Centroid Y px"} <= props["measurements"].keys()
    assert [p.name for p in tmp_path.iterdir()] == ["nuclei.geojson"]


@pytest.mark.parametrize("scale", [1.0, 0.5 / 0.499])
def test_feature_text_is_the_feature_and_refuses_non_finite_numbers(slide, scale):
    """The compact text (orjson, vertices straight from numpy) parses to :func:`feature`'s dict, integer
    and fractional vertices alike; NaN, which orjson would write as null, raises instead."""
    instances = _run(slide, scale=scale)[:20]
    for instance in instances:
        colour = (1, 2, 3)
        assert json.loads(feature_text(instance, {instance.class_name: colour})) == feature(instance, colour)
    area = dataclasses.replace(instances[0], area_um2=float("nan"))
    vertex = dataclasses.replace(
        instances[1], polygon=np.where(instances[1].polygon == instances[1].polygon[1], np.inf, 0)
    )
    for broken in (area, vertex):
        with pytest.raises(ValueError, match="non-finite"):
            feature_text(broken)


@pytest.mark.parametrize(("scale", "mpp"), [(1.0, 0.25), (0.5 / 0.499, 0.499), (2.0, None)])
def test_features_text_is_feature_text_of_each_object(slide, scale, mpp):
    """The columns' text (one orjson call for all numbers) is, character for character, what
    :func:`feature_text` writes for each object, integer and fractional vertices, with and without
    mpp; a chunk's tallies are those of its objects; a non-finite number raises naming the object."""
    rng = np.random.default_rng(2)
    found = extract_chunk(slide, (30, 30, 670, 870), (5, 9), scale, mpp, "nuclei", _mixed_types(slide), CLASSES)
    objects = found.objects.take(rng.permutation(len(found.objects)))  # rows need not follow the rings
    assert len(objects) > 20
    texts = features_text(objects).split(",\n")
    assert texts == [feature_text(instance) for instance in objects.rows()]
    for text, k in zip(texts, range(len(objects))):  # lengths to 0.001 pixel, 0.0001 µm: "9.0", not "8.999999999999998"
        measured = json.loads(text)["properties"]["measurements"]
        assert measured["Perimeter px"] == round(float(objects.perimeters[k]), 3)
        assert measured["Class pixel share"] == round(float(objects.class_shares[k]), 4) < 1
        assert len(repr(measured["Perimeter px"]).split(".")[1]) <= 3
        if mpp is not None:
            assert measured["Perimeter µm"] == pytest.approx(objects.perimeters[k] * mpp, abs=5e-5)
            assert measured["Area µm^2"] == pytest.approx(objects.areas[k] * (scale * mpp) ** 2, abs=5e-5)
            assert all(len(repr(measured[key]).split(".")[1]) <= 4 for key in ("Perimeter µm", "Area µm^2"))
    part = chunk_part(dataclasses.replace(found, objects=objects))
    rows = objects.rows()
    assert part.counts == {name: sum(r.class_name == name for r in rows) for name in {r.class_name for r in rows}}
    assert part.area_um2 == pytest.approx(sum(r.area_um2 or 0.0 for r in rows)) and part.text == ",\n".join(texts)
    assert features_text(ObjectTable.empty("nuclei")) == ""
    if objects.rings.dtype.kind == "f":  # fractional vertices: a non-finite one names its object
        rings = objects.rings.copy()
        rings[objects.bounds[3, 0] + 1] = np.nan
        with pytest.raises(ValueError, match=f"non-finite.*{objects.ids[3]}"):
            features_text(dataclasses.replace(objects, rings=rings))
    perimeters = objects.perimeters.copy()
    perimeters[5] = np.inf
    with pytest.raises(ValueError, match=f"non-finite.*{objects.ids[5]}"):
        features_text(dataclasses.replace(objects, perimeters=perimeters))


def test_validator_reports_broken_features(tmp_path, found):
    path = tmp_path / "nuclei.geojson"
    write_geojson(path, found[:2], {})
    data = json.loads(path.read_text())
    data["features"][0]["geometry"]["coordinates"][0].pop()
    del data["features"][1]["properties"]["classification"]
    problems = validate_feature_collection(data)
    assert len(problems) == 2
    assert problems[0].startswith("features[0]") and "not closed" in problems[0]
    assert problems[1].startswith("features[1]") and "classification" in problems[1]
    data["features"][1]["geometry"]["coordinates"] = [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]  # bow-tie
    assert any("invalid geometry" in p for p in validate_feature_collection(data))


def test_failed_write_leaves_target_unchanged(tmp_path, found):
    path = tmp_path / "nuclei.geojson"
    path.write_text("previous")

    def failing():
        yield from found[:3]
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_geojson(path, failing(), {})
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["nuclei.geojson"]


def test_polygon_of_ring_is_outer_contour():
    mask = np.zeros((40, 40), bool)
    mask[disk((20, 20), 15)] = True
    filled = mask.sum()
    mask[disk((20, 20), 7)] = False
    polygon = Polygon(polygon_from_mask(mask))
    assert polygon.is_valid and not polygon.interiors
    assert polygon.area == filled  # pixel-edge outline: area is the pixel count of the filled disk


def test_polygon_of_one_pixel_is_unit_square():
    mask = np.zeros((5, 6), bool)
    mask[2, 3] = True
    ring = polygon_from_mask(mask)
    assert ring[0] == ring[-1] and len(ring) == 5
    assert set(ring) == {(3.0, 2.0), (4.0, 2.0), (4.0, 3.0), (3.0, 3.0)}
    assert Polygon(ring).is_valid and Polygon(ring).area == 1


def test_polygon_of_corner_touching_pixels_is_valid():
    mask = np.zeros((4, 4), bool)
    mask[0:2, 0:2] = True
    mask[2, 2] = True  # touches the block at one corner only
    polygon = Polygon(polygon_from_mask(mask))
    assert polygon.is_valid and polygon.area == 4


@pytest.mark.parametrize("task", ["nuclei", "glands", "typé∞"])
def test_object_ids_are_uuid5_of_the_task_and_ownership_pixel(task):
    namespace = uuid.UUID("6f1d6c52-3c1e-4d43-9a55-0c7a4c3e2b11")  # fixed: ids must not change between releases
    grid = np.array([[0, 0], [12345, 67890], [-3, 7], [1, 2]])
    expected = [str(uuid.uuid5(namespace, f"{task}/{y}/{x}")) for y, x in grid.tolist()]
    assert _object_ids(task, grid) == expected
    assert _object_ids(task, grid[:0]) == []


def test_measurements_round_as_numpy_rounds_the_columns():
    """feature_text rounds each number in Python, features_text whole columns with numpy: the same
    digits, ties included (values a half unit apart from the rounding grid)."""
    from vismtl.wsi.geojson import _rounded

    rng = np.random.default_rng(0)
    ties = np.round(rng.uniform(0, 1e4, 20000), 3) + 0.0005
    values = np.concatenate([rng.uniform(0, 1e4, 20000), ties, rng.integers(0, 10**6, 2000) / 2000.0])
    for decimals in (3, 4):
        assert [_rounded(v, decimals) for v in values.tolist()] == np.round(values, decimals).tolist()
    assert math.isnan(_rounded(float("nan"), 3)) and _rounded(float("inf"), 3) == float("inf")
