"""Instances of one output chunk: which chunk owns an object, and its outline in slide coordinates.

Each chunk is post-processed with a context margin (its core region plus ``margin`` output pixels on
every side, margin larger than the largest object), so an object cut by a chunk border is seen whole
by every chunk whose core it reaches.

Ownership rule: an object belongs to the chunk whose core contains its *first pixel in raster order*
(smallest row, then smallest column in that row). The pixel depends only on the object's own pixel
set, so two chunks that both see the object whole compute the same point, and the cores tile the
grid, hence every object is kept exactly once for any chunk size. Objects whose first pixel lies
outside the core are dropped (they are the neighbour's, or cut by the array border).

An owned object that touches an array side carrying margin means the margin was too small: the
object may be cut, and the neighbour may own another piece of it. It is kept (a piece beats
nothing) and counted in :attr:`ChunkInstances.cut` (the engine adds the counts up and warns
once per slide). A side without margin (the core reaches the array edge) is taken to be the slide
edge, where objects are legitimately cut.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

__all__ = [
    "ChunkInstances",
    "ChunkPart",
    "Instance",
    "extract_chunk",
    "extract_chunk_part",
    "polygon_from_mask",
]

Core = tuple[int, int, int, int]  # (y0, x0, y1, x1), half-open, in array coordinates

# Fixed namespace so the same object gets the same id in every run and for every tiling.
_ID_NAMESPACE = uuid.UUID("6f1d6c52-3c1e-4d43-9a55-0c7a4c3e2b11")


@dataclass
class Instance:
    """One object in slide level-0 coordinates."""

    polygon: list[tuple[float, float]]  # closed exterior ring (x, y), first point == last point
    centroid: tuple[float, float]  # (x, y)
    area_px: float  # in output pixels
    area_um2: float | None
    class_id: int  # type (0 = untyped)
    class_name: str
    task: str  # e.g. "nuclei"
    id: str = ""  # UUID5 of (task, ownership pixel in the output grid): stable across runs and tilings
    mpp: float | None = None  # microns per level-0 pixel, for measurements in µm


@dataclass
class ChunkInstances:
    """What one chunk keeps, and how many of its objects reached a margin-bearing border."""

    instances: list[Instance]
    cut: int  # > 0 means the margin is smaller than some object: raise it


def extract_chunk(
    labels: np.ndarray,
    core: Core,
    origin: tuple[float, float],
    scale: float,
    mpp: float | None,
    task: str,
    types: dict[int, int] | None = None,
    class_names: Sequence[str] = (),
) -> ChunkInstances:
    """The instances owned by ``core`` (see the module docstring) and the count of cut ones.

    ``labels``: int instance map ``[H, W]`` of the chunk with its margin (0 = background);
    ``core``: ``(y0, x0, y1, x1)`` of the chunk's own region in ``labels``; ``origin``: ``(x, y)``
    of ``labels[0, 0]`` in output-grid pixels (integers, for stable ids); ``scale``: level-0 pixels
    per output pixel; ``mpp``: microns per level-0 pixel; ``types``: label -> class id;
    ``class_names[class_id]`` names a class (default: the task name for 0, ``"{task} {id}"`` else).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    touching = _labels_on_margin_sides(labels, core)
    instances, cut = [], 0
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        first = _first_pixel(labels, label, box)
        if not _inside(first, core):
            continue
        cut += label in touching
        class_id = int(types.get(label, 0)) if types else 0
        name = _class_name(class_id, task, class_names)
        instances.append(_instance(labels[box] == label, box, first, origin, scale, mpp, task, class_id, name))
    return ChunkInstances(instances, cut)


@dataclass
class ChunkPart:
    """What the engine keeps of a chunk's instances: the part file's JSON text and the tallies."""

    text: str  # JSON list of the instances' fields (vismtl.wsi.outputs reads it back)
    counts: dict[str, int]  # objects per class name
    area_um2: float  # their total area (0 without mpp)
    cut: int  # see ChunkInstances.cut


def extract_chunk_part(*args, **kwargs) -> ChunkPart:
    """:func:`extract_chunk` (same arguments) reduced to a :class:`ChunkPart`: small and plain,
    so a worker process can return it and the engine's threads never hold the objects."""
    found = extract_chunk(*args, **kwargs)
    counts: dict[str, int] = {}
    for inst in found.instances:
        counts[inst.class_name] = counts.get(inst.class_name, 0) + 1
    area = float(sum(inst.area_um2 or 0.0 for inst in found.instances))
    return ChunkPart(json.dumps([vars(i) for i in found.instances]), counts, area, found.cut)


def polygon_from_mask(mask: np.ndarray) -> list[tuple[float, float]]:
    """Outer boundary of a binary mask as a closed, valid ring in pixel-corner coordinates.

    Pixel ``(r, c)`` is the square ``[c, c + 1] x [r, r + 1]``; the ring follows the pixel edges
    exactly (a one-pixel object is the unit square), holes are ignored, and only the largest
    component is kept (also when pixels touch only at a corner, which would make the ring
    self-touching).
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("empty mask has no polygon")
    ring = _crack_ring(mask)
    polygon = _largest_valid(Polygon(ring))
    return [(float(x), float(y)) for x, y in orient(polygon, sign=1.0).exterior.coords]


def _labels_on_margin_sides(labels: np.ndarray, core: Core) -> set[int]:
    """Labels on array sides that carry margin; sides the core reaches are the slide edge."""
    y0, x0, y1, x1 = core
    h, w = labels.shape
    sides = [labels[0, :] if y0 > 0 else None, labels[-1, :] if y1 < h else None]
    sides += [labels[:, 0] if x0 > 0 else None, labels[:, -1] if x1 < w else None]
    found = set()
    for side in sides:
        if side is not None:
            found.update(int(v) for v in np.unique(side) if v > 0)
    return found


def _first_pixel(labels: np.ndarray, label: int, box: tuple[slice, slice]) -> tuple[int, int]:
    """(row, col) of the label's first pixel in raster order; it lies in the box's first row."""
    row = box[0].start
    col = box[1].start + int(np.argmax(labels[row, box[1]] == label))
    return row, col


def _inside(point: tuple[int, int], core: Core) -> bool:
    y0, x0, y1, x1 = core
    return y0 <= point[0] < y1 and x0 <= point[1] < x1


def _class_name(class_id: int, task: str, class_names: Sequence[str]) -> str:
    if 0 <= class_id < len(class_names):
        return class_names[class_id]
    return task if class_id == 0 else f"{task} {class_id}"


def _instance(
    mask: np.ndarray,
    box: tuple[slice, slice],
    first: tuple[int, int],
    origin: tuple[float, float],
    scale: float,
    mpp: float | None,
    task: str,
    class_id: int,
    class_name: str,
) -> Instance:
    """Convert one object's mask (cropped to ``box``) to slide level-0 coordinates."""
    off_x, off_y = origin[0] + box[1].start, origin[1] + box[0].start
    ring = [((x + off_x) * scale, (y + off_y) * scale) for x, y in polygon_from_mask(mask)]
    rows, cols = np.nonzero(mask)
    centroid = ((cols.mean() + 0.5 + off_x) * scale, (rows.mean() + 0.5 + off_y) * scale)
    area = float(rows.size)
    gy, gx = round(origin[1] + first[0]), round(origin[0] + first[1])
    return Instance(
        polygon=ring,
        centroid=(float(centroid[0]), float(centroid[1])),
        area_px=area,
        area_um2=None if mpp is None else area * (scale * mpp) ** 2,
        class_id=class_id,
        class_name=class_name,
        task=task,
        id=str(uuid.uuid5(_ID_NAMESPACE, f"{task}/{gy}/{gx}")),
        mpp=mpp,
    )


def _crack_ring(mask: np.ndarray) -> np.ndarray:
    """Vertices ``[N, 2]`` (x, y) of the largest outer boundary along pixel edges.

    Contours are traced on a doubled lattice where each pixel becomes a 3x3 block whose outer
    lattice points are its corners and edge midpoints, so OpenCV's pixel-centre tracing runs along
    pixel edges; the corners OpenCV cuts diagonally at concave turns are put back.
    """
    h, w = mask.shape
    lattice = np.zeros((2 * h + 3, 2 * w + 3), np.uint8)  # one lattice point of padding per side
    lattice[2:-2:2, 2:-2:2] = mask
    lattice = cv2.dilate(lattice, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(lattice, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = max(contours, key=cv2.contourArea)[:, 0, :]
    points = _restore_concave_corners(points, lattice)
    return (_drop_collinear(points) - 1) / 2.0


def _restore_concave_corners(points: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Replace each diagonal step p -> q by p -> corner -> q, the corner being the foreground one."""
    nxt = np.roll(points, -1, axis=0)
    step = nxt - points
    diagonal = np.flatnonzero((np.abs(step[:, 0]) == 1) & (np.abs(step[:, 1]) == 1))
    if diagonal.size == 0:
        return points
    p, q = points[diagonal], nxt[diagonal]
    corner_a = np.stack([q[:, 0], p[:, 1]], axis=1)  # move along x first
    corner_b = np.stack([p[:, 0], q[:, 1]], axis=1)  # move along y first
    use_a = lattice[corner_a[:, 1], corner_a[:, 0]] > 0
    corners = np.where(use_a[:, None], corner_a, corner_b)
    return np.insert(points, diagonal + 1, corners, axis=0)


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """Keep only the vertices where the boundary turns (or reverses)."""
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    dot = (before * after).sum(axis=1)
    return points[(cross != 0) | (dot < 0)].astype(float)


def _largest_valid(polygon: Polygon) -> Polygon:
    """The polygon itself if valid, else the exterior of the largest piece of its repair."""
    if polygon.is_valid:
        return polygon
    parts = [g for g in shapely.get_parts(shapely.make_valid(polygon)) if isinstance(g, Polygon) and g.area > 0]
    if not parts:
        raise ValueError("mask outline has no area")
    return Polygon(max(parts, key=lambda g: g.area).exterior)
