"""QuPath-compatible GeoJSON: one Feature per instance, written atomically, and a validator.

Layout (what QuPath >= 0.4 reads in ``PathObjectTypeAdapters``)::

    {"type": "Feature", "id": "<uuid>",
     "geometry": {"type": "Polygon", "coordinates": [[[x, y], ..., [x, y]]]},   # level-0 pixels
     "properties": {"objectType": "detection",          # "annotation" for glands and lumina
                    "classification": {"name": "Neoplastic", "color": [r, g, b]},
                    "isLocked": false,
                    "measurements": {"Area µm^2": 41.2, ...},   # name -> number (see measurements)
                    "metadata": {"task": "nuclei", "class_id": "1"}}}

Measurements use the dict form of QuPath >= 0.4 (0.3 and older expect a list of
``{"name", "value"}``). Nuclei are detections (lightweight, QuPath's norm for large numbers);
glands and lumina are annotations so QuPath nests lumina in glands and they can be edited.
QuPath keeps ``metadata`` (strings) only for annotations; for detections the task is also in the
classification name when the instance is untyped.
"""

from __future__ import annotations

import collections
import math
import numbers
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import shapely
from shapely.geometry import shape

from vismtl.io import atomic_open
from vismtl.wsi.instances import ChunkInstances, Instance, ObjectTable
from vismtl.wsi.pieces import pieces_text

__all__ = [
    "OBJECT_TYPES",
    "ChunkPart",
    "chunk_part",
    "feature",
    "feature_text",
    "features_text",
    "measurements",
    "merge_parts",
    "validate_feature_collection",
    "write_geojson",
]

# QuPath object type per task; tasks not listed become detections.
OBJECT_TYPES: dict[str, str] = {
    "gland": "annotation",
    "glands": "annotation",
    "lumen": "annotation",
    "lumina": "annotation",
}
_QUPATH_TYPES = {"annotation", "detection", "cell", "tile"}


def feature(instance: Instance, colour: tuple[int, int, int], *, object_type: str | None = None) -> dict:
    """One QuPath-compatible GeoJSON Feature; ``object_type`` overrides :data:`OBJECT_TYPES`."""
    return _feature(instance, colour, _positions(instance.polygon), object_type)


def _feature(instance: Instance, colour: tuple[int, int, int], ring, object_type: str | None = None) -> dict:
    return {
        "type": "Feature",
        "id": instance.id or str(uuid.uuid4()),
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": object_type or OBJECT_TYPES.get(instance.task, "detection"),
            "classification": {"name": instance.class_name, "color": [int(c) for c in colour]},
            "isLocked": False,
            "measurements": measurements(instance),
            "metadata": {"task": instance.task, "class_id": str(instance.class_id)},
        },
    }


def _positions(polygon) -> list:
    """The ring's vertices as lists: integers stay integers (shorter text, faster to write)."""
    vertices = np.asarray(polygon)
    return (vertices if np.issubdtype(vertices.dtype, np.integer) else vertices.astype(np.float64)).tolist()


def measurements(instance: Instance) -> dict[str, float]:
    """Area (output pixels, µm²), perimeter and centroid (level-0 pixels, µm), the class id and, for
    a typed object, the fraction of its pixels decided as its class ("Class pixel share", HoVer-Net's
    ``type_prob``: low where the model hesitated between types); lengths to 0.001 pixel and 0.0001
    µm (:data:`DECIMALS`: "9.0", not "8.999999999999998")."""
    perimeter = instance.perimeter_px
    values = {
        "Area output px": float(instance.area_px),
        "Perimeter px": _rounded(perimeter, DECIMALS["Perimeter px"]),
        "Centroid X px": float(instance.centroid[0]),
        "Centroid Y px": float(instance.centroid[1]),
        "Class id": float(instance.class_id),
    }
    if instance.class_share is not None:
        values["Class pixel share"] = _rounded(instance.class_share, DECIMALS["Class pixel share"])
    if instance.area_um2 is not None:
        values["Area µm^2"] = _rounded(instance.area_um2, DECIMALS["Area µm^2"])
    if instance.mpp is not None:
        values["Perimeter µm"] = _rounded(perimeter * instance.mpp, DECIMALS["Perimeter µm"])
    return values


def _rounded(value: float, decimals: int) -> float:
    """``np.round(value, decimals)`` as numpy computes it (the nearest integer of ``value * 10**d``,
    ties to even, over ``10**d``), without a numpy call per number; non-finite values as they are."""
    scale = 10.0**decimals
    return round(value * scale) / scale if math.isfinite(value) else float(value)


def feature_text(instance: Instance, colours: Mapping[str, tuple[int, int, int]] | None = None) -> str:
    """The instance's Feature as one line of compact JSON (a non-finite number raises). Classes
    missing from ``colours`` get a fixed colour derived from their name.

    orjson writes the vertices straight from the numpy ring (no Python number per vertex) and the
    rest several times faster than the standard library: this text is about a quarter of a
    chunk's finishing (``benchmarks/wsi_finishing.py``). It writes NaN as null, hence the check."""
    colour = (colours or {}).get(instance.class_name) or _name_colour(instance.class_name)
    vertices = np.asarray(instance.polygon)
    if not np.issubdtype(vertices.dtype, np.integer):
        vertices = vertices.astype(np.float64)
    data = _feature(instance, colour, np.ascontiguousarray(vertices))
    finite = vertices.dtype.kind != "f" or np.isfinite(vertices).all()
    if not (finite and all(map(math.isfinite, data["properties"]["measurements"].values()))):
        raise ValueError(f"a non-finite number in the Feature of {instance.task} object {instance.id}")
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def write_geojson(path: str | Path, instances: Iterable[Instance], colours: Mapping[str, tuple[int, int, int]]) -> int:
    """Stream a FeatureCollection to ``path`` atomically and return the number of features.

    Features are written one at a time (a slide can hold millions of nuclei); on any error,
    including a non-finite number, ``path`` keeps its previous content.
    """
    return merge_parts(path, (feature_text(instance, colours) for instance in instances))


@dataclass
class ChunkPart:
    """What the engine keeps of a chunk's instances: their Features and the tallies.

    ``text`` holds the Features one per line, separated by commas: the slide's GeoJSON is these
    texts put together (:func:`merge_parts`), so the objects are serialised where the chunk is
    finished (a worker process, beside the model) and never parsed again. ``pieces`` holds the
    pieces of the objects that cross the chunk's border, put together at the slide's end.
    """

    text: str | None  # Features, ",\n"-separated ("" for none); None once written to its part file
    counts: dict[str, int]  # objects per class name
    area_um2: float  # their total area (0 without mpp)
    cut: int  # see ChunkInstances.cut
    pieces: str | None = ""  # pieces of objects crossing the chunk's border (vismtl.wsi.pieces), likewise


def chunk_part(found: ChunkInstances) -> ChunkPart:
    """A chunk's owned instances as a :class:`ChunkPart`: small and plain, so a worker process
    can return it and the engine's threads never hold the objects."""
    objects = found.objects
    counts = dict(collections.Counter(objects.class_names))
    areas = [] if objects.um2_per_px is None else (objects.areas * objects.um2_per_px).tolist()
    return ChunkPart(features_text(objects), counts, float(sum(areas)), found.cut, pieces_text(found.pieces))


def features_text(objects: ObjectTable) -> str:
    """The objects' Features, one line each, separated by ",\n": what :func:`feature_text` writes
    for each of them, character for character (a non-finite number raises).

    The numbers of every object are written by one call of orjson and cut apart; each object then
    costs a ring's call and a string's formatting, a quarter of what its :class:`Instance` and its
    :func:`feature_text` cost (``benchmarks/wsi_finishing.py``)."""
    if not len(objects):
        return ""
    perimeters = np.round(objects.perimeters, DECIMALS["Perimeter px"])
    columns = [objects.areas, perimeters, objects.centroids[:, 0], objects.centroids[:, 1], objects.class_ids]
    keys = list(_MEASUREMENT_KEYS)
    if objects.class_shares is not None:
        columns.append(np.round(objects.class_shares, DECIMALS["Class pixel share"]))
        keys.append("Class pixel share")
    if objects.um2_per_px is not None:
        columns.append(np.round(objects.areas * objects.um2_per_px, DECIMALS["Area µm^2"]))
        keys.append("Area µm^2")
    if objects.mpp is not None:
        columns.append(np.round(objects.perimeters * objects.mpp, DECIMALS["Perimeter µm"]))
        keys.append("Perimeter µm")
    values = np.stack(columns, axis=1).astype(np.float64)
    finite = np.isfinite(values).all(axis=1)
    if objects.rings.dtype.kind == "f":  # an object's ring holds a non-finite vertex where the count rises
        broken = np.concatenate([[0], np.cumsum(~np.isfinite(objects.rings).all(axis=1))])
        finite &= broken[objects.bounds[:, 1]] == broken[objects.bounds[:, 0]]
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"a non-finite number in the Feature of {objects.task} object {objects.ids[first]}")
    layout = ",".join(f"{orjson.dumps(key).decode()}:%s" for key in keys)
    numbers = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY).decode()[2:-2].split("],[")
    task = orjson.dumps(objects.task).decode()
    object_type = orjson.dumps(OBJECT_TYPES.get(objects.task, "detection")).decode()
    classes = {name: _class_text(name) for name in set(objects.class_names)}
    rings, dumps, numpy = objects.rings, orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
    lines = []
    for (start, stop), row, name, class_id, object_id in zip(
        objects.bounds.tolist(), numbers, objects.class_names, objects.class_ids.tolist(), objects.ids
    ):
        lines.append(
            _FEATURE
            % (
                object_id,
                dumps(rings[start:stop], option=numpy).decode(),
                object_type,
                classes[name],
                layout % tuple(row.split(",")),
                task,
                class_id,
            )
        )
    return ",\n".join(lines)


def _class_text(name: str) -> str:
    """``"name":...,"color":[r,g,b]`` of a classification, as orjson writes it."""
    return orjson.dumps({"name": name, "color": list(_name_colour(name))}).decode()[1:-1]


# A Feature as feature_text writes it (orjson's compact form of _feature's dict, in its key order).
_FEATURE = (
    '{"type":"Feature","id":"%s","geometry":{"type":"Polygon","coordinates":[%s]},'
    '"properties":{"objectType":%s,"classification":{%s},"isLocked":false,"measurements":{%s},'
    '"metadata":{"task":%s,"class_id":"%d"}}}'
)
# then the class pixel share and the µm ones
_MEASUREMENT_KEYS = ("Area output px", "Perimeter px", "Centroid X px", "Centroid Y px", "Class id")
# Decimals of the measurements that are not whole numbers (the centroids: 0.001 pixel, as the vertices)
DECIMALS = {"Perimeter px": 3, "Area µm^2": 4, "Perimeter µm": 4, "Class pixel share": 4}


def merge_parts(path: str | Path, texts: Iterable[str]) -> int:
    """Write the FeatureCollection of ``texts`` (each one or more ",\n"-separated Features) to
    ``path`` atomically; the number of Features."""
    count = 0
    with atomic_open(path, "w") as handle:
        handle.write('{"type": "FeatureCollection", "features": [\n')
        for text in texts:
            if text:
                handle.write((",\n" if count else "") + text)
                count += text.count("\n") + 1  # Features hold no raw newline: one per line
        handle.write("\n]}\n")
    return count


def validate_feature_collection(data: Any) -> list[str]:
    """Problems that would stop QuPath or a GeoJSON reader (empty list when the collection is fine)."""
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        return ['top level is not {"type": "FeatureCollection", ...}']
    features = data.get("features")
    if not isinstance(features, list):
        return ["'features' is not a list"]
    problems = []
    for index, item in enumerate(features):
        problems += [f"features[{index}]: {p}" for p in _feature_problems(item)]
    return problems


def _feature_problems(item: Any) -> list[str]:
    if not isinstance(item, dict) or item.get("type") != "Feature":
        return ["not a Feature"]
    problems = _id_problems(item.get("id")) + _geometry_problems(item.get("geometry"))
    return problems + _property_problems(item.get("properties"))


def _id_problems(value: Any) -> list[str]:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return [f"id {value!r} is not a UUID string"]
    return []


def _geometry_problems(geometry: Any) -> list[str]:
    if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
        return ["geometry is not a Polygon or MultiPolygon"]
    coords = geometry.get("coordinates")
    polygons = [coords] if geometry["type"] == "Polygon" else coords
    if not isinstance(polygons, list) or not polygons:
        return ["coordinates are not a non-empty array"]
    problems = []
    for polygon in polygons:
        if not isinstance(polygon, list) or not polygon:
            problems.append("polygon is not a non-empty array of rings")
            continue
        problems += [p for ring in polygon for p in _ring_problems(ring)]
    if not problems:
        geom = shape(geometry)
        if not geom.is_valid:
            problems.append(f"invalid geometry: {shapely.is_valid_reason(geom)}")
    return problems


def _ring_problems(ring: Any) -> list[str]:
    if not isinstance(ring, list) or not all(_is_position(p) for p in ring):
        return ["ring is not an array of [x, y] positions with finite numbers"]
    if len(ring) < 4:
        return [f"ring has {len(ring)} positions, fewer than 4"]
    if ring[0] != ring[-1]:
        return ["ring is not closed (first position != last)"]
    return []


def _is_position(value: Any) -> bool:
    return isinstance(value, list) and len(value) in (2, 3) and all(_is_finite(v) for v in value)


def _is_finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _property_problems(properties: Any) -> list[str]:
    if not isinstance(properties, dict):
        return ["properties missing"]
    problems = []
    if properties.get("objectType") not in _QUPATH_TYPES:
        problems.append(f"objectType {properties.get('objectType')!r} not one of {sorted(_QUPATH_TYPES)}")
    problems += _classification_problems(properties.get("classification"))
    values = properties.get("measurements")
    if not isinstance(values, dict) or not all(isinstance(k, str) and _is_finite(v) for k, v in values.items()):
        problems.append("measurements are not a dict of name -> finite number")
    if not isinstance(properties.get("isLocked", False), bool):
        problems.append("isLocked is not a boolean")
    return problems


def _classification_problems(classification: Any) -> list[str]:
    if not isinstance(classification, dict) or not isinstance(classification.get("name"), str):
        return ["classification missing or without a name"]
    colour = classification.get("color")
    ok = isinstance(colour, list) and len(colour) == 3
    if not ok or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour):
        return [f"classification color {colour!r} is not [r, g, b] in 0..255"]
    return []


def _name_colour(name: str) -> tuple[int, int, int]:
    """A fixed, reasonably bright colour for a class name (stable across runs, unlike hash())."""
    digest = zlib.crc32(name.encode())
    return tuple(64 + (digest >> shift) % 192 for shift in (0, 8, 16))
