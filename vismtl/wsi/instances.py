"""Instances of one output chunk: which objects a chunk emits, and their outlines in slide coordinates.

Each chunk is post-processed with a context margin (its core region plus ``margin`` output pixels on
every side), so that the decisions inside its core are those the whole slide would give.

An object all of whose pixels lie in the chunk's core is emitted by that chunk, whole. An object that
crosses the core's border is not: the chunk keeps its piece (the pixels inside the core) and links
to the neighbouring cores it reaches (:mod:`vismtl.wsi.pieces`), and the slide's pieces are put
together at its end (:func:`assemble`). Cores tile the output grid, so every object comes out once and
whole for any chunk size, also one larger than the margin (glands).

An object that touches an array side carrying margin was seen only in part by the chunk: larger
than the margin, its far pixels were decided with less context than the margin gives. Its pieces
say so, and the objects put together from such pieces are counted (:attr:`ChunkInstances.cut`;
the engine reports the count). A side without margin (the core reaches the array edge) is taken
to be the slide edge, where objects are legitimately cut.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vismtl.tasks.instance_targets import majority_of
from vismtl.wsi.outlines import label_outlines, label_pixels, label_stats
from vismtl.wsi.pieces import ObjectPiece, chunk_pieces, group_pieces, piece_masks
from vismtl.wsi.tiling import nonzero_box

__all__ = [
    "ChunkInstances",
    "Instance",
    "assemble",
    "extract_chunk",
    "polygon_from_mask",
]

Core = tuple[int, int, int, int]  # (y0, x0, y1, x1), half-open, in array coordinates

# Fixed namespace so the same object gets the same id in every run and for every tiling.
_ID_NAMESPACE = uuid.UUID("6f1d6c52-3c1e-4d43-9a55-0c7a4c3e2b11").bytes


@dataclass
class Instance:
    """One object in slide level-0 coordinates."""

    # [N, 2] closed exterior ring (x, y), first point == last point: int64 where every vertex is
    # an integer (an integer level-0 scale), which the GeoJSON then writes as "12" for "12.0";
    # else float64 rounded to 0.001 level-0 pixel
    polygon: np.ndarray
    centroid: tuple[float, float]  # (x, y)
    area_px: float  # in output pixels
    area_um2: float | None
    perimeter_px: float  # of the polygon, in level-0 pixels
    class_id: int  # type (0 = untyped)
    class_name: str
    task: str  # e.g. "nuclei"
    id: str = ""  # UUID5 of (task, ownership pixel in the output grid): stable across runs and tilings
    mpp: float | None = None  # microns per level-0 pixel, for measurements in µm
    class_share: float | None = None  # the fraction of its pixels decided as its class (None: untyped)


@dataclass
class ObjectTable:
    """Objects as columns: the fields of :class:`Instance` for each of ``K`` objects, without a
    Python object per object (a chunk holds hundreds of nuclei; their GeoJSON text is made from
    these columns at once, :func:`vismtl.wsi.geojson.features_text`)."""

    task: str
    rings: np.ndarray  # [V, 2] vertices of the rings (see Instance.polygon)
    bounds: np.ndarray  # int64 [K, 2]: object k's ring is rings[bounds[k, 0]:bounds[k, 1]]
    centroids: np.ndarray  # float64 [K, 2] (x, y), level-0 pixels
    areas: np.ndarray  # int64 [K], output pixels
    perimeters: np.ndarray  # float64 [K], level-0 pixels
    class_ids: np.ndarray  # int64 [K]
    class_names: list[str]
    ids: list[str]
    mpp: float | None = None  # microns per level-0 pixel
    um2_per_px: float | None = None  # square microns per output pixel
    class_shares: np.ndarray | None = None  # float64 [K] (see Instance.class_share); None: untyped

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls, task: str) -> ObjectTable:
        none = np.zeros(0, np.int64)
        return cls(
            task, np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64), np.zeros((0, 2)), none, none, none, [], []
        )

    def rows(self) -> list[Instance]:
        """One :class:`Instance` per object (their polygons are views of ``rings``)."""
        areas, perimeters = self.areas.tolist(), self.perimeters.tolist()
        rows = []
        for k, (start, stop) in enumerate(self.bounds.tolist()):
            rows.append(
                Instance(
                    polygon=self.rings[start:stop],
                    centroid=tuple(self.centroids[k].tolist()),
                    area_px=float(areas[k]),
                    area_um2=None if self.um2_per_px is None else areas[k] * self.um2_per_px,
                    perimeter_px=perimeters[k],
                    class_id=int(self.class_ids[k]),
                    class_name=self.class_names[k],
                    task=self.task,
                    id=self.ids[k],
                    mpp=self.mpp,
                    class_share=None if self.class_shares is None else float(self.class_shares[k]),
                )
            )
        return rows

    def take(self, order: np.ndarray) -> ObjectTable:
        """The objects ``order`` (indices), in that order; the rings are shared."""
        order = np.asarray(order, np.int64)
        names, ids = [self.class_names[k] for k in order.tolist()], [self.ids[k] for k in order.tolist()]
        columns = (self.bounds[order], self.centroids[order], self.areas[order], self.perimeters[order])
        return dataclasses.replace(
            self,
            bounds=columns[0],
            centroids=columns[1],
            areas=columns[2],
            perimeters=columns[3],
            class_ids=self.class_ids[order],
            class_names=names,
            ids=ids,
            class_shares=None if self.class_shares is None else self.class_shares[order],
        )

    @classmethod
    def concat(cls, tables: Sequence[ObjectTable]) -> ObjectTable:
        """The objects of ``tables`` (of one task, scale and mpp) one after the other."""
        if len(tables) == 1:
            return tables[0]
        shifts = np.cumsum([0] + [len(t.rings) for t in tables[:-1]])
        rings = np.concatenate([t.rings for t in tables])
        return dataclasses.replace(
            tables[0],
            rings=rings,
            bounds=np.concatenate([t.bounds + shift for t, shift in zip(tables, shifts)]),
            centroids=np.concatenate([t.centroids for t in tables]),
            areas=np.concatenate([t.areas for t in tables]),
            perimeters=np.concatenate([t.perimeters for t in tables]),
            class_ids=np.concatenate([t.class_ids for t in tables]),
            class_names=[name for t in tables for name in t.class_names],
            ids=[i for t in tables for i in t.ids],
            class_shares=None if tables[0].class_shares is None else np.concatenate([t.class_shares for t in tables]),
        )


@dataclass
class ChunkInstances:
    """What one chunk keeps (its whole objects and the pieces of those crossing its core's border),
    or the objects :func:`assemble` put together."""

    objects: ObjectTable
    pieces: list[ObjectPiece] = field(default_factory=list)
    cut: int = 0  # of the objects, those seen in part by a chunk (only assembled ones can be)

    @property
    def instances(self) -> list[Instance]:
        return self.objects.rows()


def extract_chunk(
    labels: np.ndarray,
    core: Core,
    origin: tuple[float, float],
    scale: float,
    mpp: float | None,
    task: str,
    type_map: np.ndarray | None = None,
    class_names: Sequence[str] = (),
    votes: np.ndarray | None = None,
) -> ChunkInstances:
    """The objects within ``core``, the pieces of those crossing its border (see the module
    docstring) and the count of those seen only in part.

    ``labels``: int instance map ``[H, W]`` of the chunk with its margin (0 = background);
    ``core``: ``(y0, x0, y1, x1)`` of the chunk's own region in ``labels``; ``origin``: ``(x, y)``
    of ``labels[0, 0]`` in output-grid pixels (integers, for stable ids), or int ``[L, 2]``, one
    per label ``1..L``, for labels laid out side by side (:func:`assemble`); ``scale``: level-0 pixels
    per output pixel; ``mpp``: microns per level-0 pixel; ``type_map``: int ``[H, W]``, each
    pixel's type (a type task's decisions), or ``votes``: int ``[L + 1, T]``, row ``l`` the types
    of label ``l``'s pixels counted (labels ``1..L``, as :func:`assemble` lays them out). An object
    takes the type most of its pixels have, as the type task's refine paints it
    (:func:`voted_types`); ``class_names[class_id]`` names a class (default: the task name for 0,
    ``"{task} {id}"`` else).

    Outlines, areas, centroids and first pixels of all objects come from whole-array operations
    (:mod:`vismtl.wsi.outlines`); the emitted objects are kept as columns (:class:`ObjectTable`).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    # Only the box of the objects is traced and measured (most of a chunk at the edge of the
    # tissue is glass), in integers shifted back exactly: the same numbers as on the whole array.
    found = nonzero_box(labels)
    if found is None:
        return ChunkInstances(ObjectTable.empty(task))
    top, left = found[0].start, found[1].start
    box = labels[found]
    ids, offsets, vertices = label_outlines(box)
    vertices += (left, top)
    pixels = label_pixels(box, ids)  # every object's pixels: measured, and those of pieces kept
    area, centroid, first = label_stats(box, ids, offset=(top, left), pixels=pixels)
    y0, x0, y1, x1 = core
    # pixels of each label outside the core: the margin's strips, a fraction of the array
    outside = np.zeros(int(ids[-1]) + 1, np.int64)
    for strip in (labels[:y0], labels[y1:], labels[y0:y1, :x0], labels[y0:y1, x1:]):
        outside += np.bincount(strip.ravel(), minlength=outside.size)
    outside = outside[ids]
    owned = np.flatnonzero(outside == 0)  # every pixel in the core
    crossing = np.flatnonzero((outside > 0) & (outside < area))
    touching = _labels_on_margin_sides(labels, core)
    cut = np.array([int(ids[k]) in touching for k in crossing.tolist()], bool)
    if votes is not None:
        counted = np.asarray(votes, np.int64)[ids]
    else:
        counted = _core_votes(type_map, found, core, pixels, ids.size, len(class_names))
    piece_of = np.full(ids.size, -1, np.int64)
    piece_of[crossing] = np.arange(crossing.size)
    where, of = pixels[0], piece_of[pixels[1]]
    rows, cols = np.divmod(where[of >= 0], box.shape[1])
    inside = (rows + top, cols + left, of[of >= 0])
    pieces = chunk_pieces(labels, core, origin, ids[crossing], counted[crossing], cut, inside)
    origins = np.asarray(origin, np.float64)  # (x, y) of labels[0, 0], per label where given so
    per_label = origins.ndim == 2
    origins = origins[ids - 1] if per_label else np.broadcast_to(origins, (ids.size, 2))
    # one origin: broadcast over the vertices (a chunk's rings hold ~10^5 of them), not repeated
    at_vertex = np.repeat(origins, np.diff(offsets), axis=0) if per_label else origins[:1]
    if float(scale).is_integer() and np.array_equal(origins, np.round(origins)):  # exact in integers
        rings = (vertices.astype(np.int64) + at_vertex.astype(np.int64)) * int(scale)
    else:  # to a thousandth of a level-0 pixel: "33.066", not "33.06613226452905", in the GeoJSON
        rings = np.round((vertices + at_vertex) * scale, 3)
    centres = np.round((centroid + origins) * scale, 3)[owned]  # to 0.001 px, as the vertices
    # the rings run along pixel edges with integer vertices: their lengths are exact integers
    walked = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(vertices, axis=0)).sum(axis=1))])
    perimeters = ((walked[offsets[1:] - 1] - walked[offsets[:-1]]) * scale)[owned]
    grid = np.rint(origins[owned, ::-1] + first[owned]).astype(np.int64)  # (y, x)
    class_ids, shares = voted_types(counted[owned])
    table = ObjectTable(
        task,
        rings,
        np.stack([offsets[:-1][owned], offsets[1:][owned]], axis=1).astype(np.int64),
        centres,
        area[owned].astype(np.int64),
        perimeters,
        class_ids,
        [_class_name(c, task, class_names) for c in class_ids.tolist()],
        _object_ids(task, grid),
        mpp,
        None if mpp is None else (scale * mpp) ** 2,
        shares,
    )
    return ChunkInstances(table, pieces)


def voted_types(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Per object (a row of ``votes``, its pixels' types counted): its type, by the rule of the type
    task's refine (:func:`~vismtl.tasks.instance_targets.majority_of`), and the fraction of its
    pixels that have it (HoVer-Net's ``type_prob``). ``votes`` without columns: untyped, no fractions."""
    best = majority_of(votes)
    if votes.shape[1] == 0:
        return best, None
    return best, np.take_along_axis(votes, best[:, None], axis=1)[:, 0] / np.maximum(votes.sum(axis=1), 1)


def _core_votes(
    type_map: np.ndarray | None,
    box: tuple[slice, slice],
    core: Core,
    pixels: tuple[np.ndarray, np.ndarray],
    count: int,
    types: int,
) -> np.ndarray:
    """int64 ``[count, T]``: per label, the types of its pixels in ``core`` counted (``pixels``: those
    of the labels in ``box``, :func:`~vismtl.wsi.outlines.label_pixels`); ``T`` columns, at least
    ``types``; none without a type map. A piece of an object counts its core's pixels only, so the
    pieces' votes add up to the whole object's."""
    if type_map is None:
        return np.zeros((count, 0), np.int64)
    where, label = pixels
    (top, bottom), (left, right) = (box[0].start, box[0].stop), (box[1].start, box[1].stop)
    y0, x0, y1, x1 = core
    in_core = np.zeros((bottom - top, right - left), bool)
    in_core[max(y0 - top, 0) : max(y1 - top, 0), max(x0 - left, 0) : max(x1 - left, 0)] = True
    kept = in_core.ravel()[where]
    decided = np.asarray(type_map)[box].ravel()[where[kept]].astype(np.int64)
    columns = max(types, int(decided.max(initial=0)) + 1)
    return np.bincount(label[kept] * columns + decided, minlength=count * columns).reshape(count, columns)


def assemble(
    pieces: Sequence[ObjectPiece],
    chunk: int,
    scale: float,
    mpp: float | None,
    task: str,
    class_names: Sequence[str] = (),
    batch: int = 4096,
) -> ChunkInstances:
    """The objects of a slide's pieces (:mod:`vismtl.wsi.pieces`; ``chunk``: the cores' side), each
    outlined and measured as :func:`extract_chunk` does an object within one core (``batch`` at a
    time); ``cut`` counts those with a piece seen in part."""
    groups = group_pieces(pieces, chunk)
    objects = [piece_masks(pieces, group) for group in groups]
    # small objects (nuclei) side by side, large ones (glands) alone: rows of them would be mostly empty
    alone = [k for k, (mask, *_) in enumerate(objects) if max(mask.shape) > 256]
    small = [k for k, (mask, *_) in enumerate(objects) if max(mask.shape) <= 256]
    order, tables = [], []
    for members in [[k] for k in alone] + [small[i : i + batch] for i in range(0, len(small), batch)]:
        labels, origins, votes = _side_by_side([objects[k] for k in members])
        made = extract_chunk(labels, (0, 0, *labels.shape), origins, scale, mpp, task, None, class_names, votes)
        order += members  # one object per label, in the labels' order
        tables.append(made.objects)
    found = ObjectTable.concat(tables).take(np.argsort(order)) if tables else ObjectTable.empty(task)
    return ChunkInstances(found, cut=sum(any(pieces[k].cut for k in group) for group in groups))


def _side_by_side(objects: Sequence[tuple[np.ndarray, int, int, np.ndarray]], width: int = 2048):
    """``(mask, top, left, votes)`` objects laid out in rows, 1 px apart, as labels ``1..K`` of one
    array (outlined and measured at once: a call per object costs ~0.4 ms): ``(labels, origins
    int [K, 2] (x, y) of the array's [0, 0] for each object, votes int [K + 1, T] by label)``."""
    width = max(width, max(mask.shape[1] for mask, *_ in objects) + 1)
    places, x, y, row_height = [], 0, 0, 0
    for mask, *_ in objects:
        if x + mask.shape[1] > width:
            x, y, row_height = 0, y + row_height + 1, 0
        places.append((y, x))
        x, row_height = x + mask.shape[1] + 1, max(row_height, mask.shape[0])
    labels = np.zeros((y + row_height, width), np.int32)
    votes = np.zeros((len(objects) + 1, max(v.size for *_, v in objects)), np.int64)
    origins = np.empty((len(objects), 2), np.int64)
    for k, ((mask, top, left, counted), (row, col)) in enumerate(zip(objects, places)):
        window = (slice(row, row + mask.shape[0]), slice(col, col + mask.shape[1]))
        labels[window][mask] = k + 1
        votes[k + 1, : counted.size] = counted
        origins[k] = (left - col, top - row)
    return labels, origins, votes


def polygon_from_mask(mask: np.ndarray) -> list[tuple[float, float]]:
    """Outer boundary of a binary mask as a closed, valid ring in pixel-corner coordinates.

    Pixel ``(r, c)`` is the square ``[c, c + 1] x [r, r + 1]``; the ring follows the pixel edges
    exactly (a one-pixel object is the unit square), holes are ignored, and of several pieces
    only the largest is kept (see :func:`vismtl.wsi.outlines.label_outlines`).
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("empty mask has no polygon")
    _, _, vertices = label_outlines(mask.astype(np.uint8))
    return [(float(x), float(y)) for x, y in vertices.tolist()]


def _object_ids(task: str, grid: np.ndarray) -> list[str]:
    """``str(uuid.uuid5(namespace, f"{task}/{y}/{x}"))`` for each ``(y, x)`` row of ``grid``, without
    UUID objects (a few times faster: a chunk names hundreds of objects)."""
    names = [f"{task}/{y}/{x}".encode() for y, x in grid.tolist()]
    digests = b"".join(hashlib.sha1(_ID_NAMESPACE + name).digest()[:16] for name in names)
    raw = np.frombuffer(digests, np.uint8).reshape(-1, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50  # version 5
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.tobytes().hex()
    hexes = (text[k : k + 32] for k in range(0, len(text), 32))
    return [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in hexes]


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


def _class_name(class_id: int, task: str, class_names: Sequence[str]) -> str:
    if 0 <= class_id < len(class_names):
        return class_names[class_id]
    return task if class_id == 0 else f"{task} {class_id}"
