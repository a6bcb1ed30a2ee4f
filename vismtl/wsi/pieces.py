"""Objects that cross chunk borders, put together from the chunks' pieces.

A chunk is decided with a margin of context, but an object may be larger than that margin (a
gland at 0.5 um/px spans hundreds of pixels; the default margin is 64). So a chunk does not
emit an object that crosses its core's border: it keeps a :class:`ObjectPiece`, the object's pixels
inside its core, and links, one pixel of the same object in each neighbouring core its region
shows. Cores tile the output grid, so the pieces of an object hold each of its pixels once. At
the end of the slide :func:`group_pieces` joins pieces whose links land in each other (union-find)
and :func:`piece_masks` paints each group's pixels, which are then outlined and measured like any
object that lies within one core. An object that fits the margin comes out as the chunk that saw
it whole would have made it; a larger one is whole too, however many chunks it crosses.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ObjectPiece", "chunk_pieces", "group_pieces", "piece_masks", "pieces_text", "read_pieces"]

Core = tuple[int, int, int, int]  # (y0, x0, y1, x1) in the chunk's array


@dataclass
class ObjectPiece:
    """The pixels of one object inside one chunk's core, on the output grid."""

    top: int  # output-grid row of mask[0, 0]
    left: int  # output-grid column of mask[0, 0]
    mask: np.ndarray  # bool [h, w]: the object's pixels in the core, within their bounding box
    votes: np.ndarray  # int64 [T]: how many of its pixels each type decision took (T = 0: untyped)
    links: np.ndarray  # int64 [L, 2]: (row, col) output-grid pixels of the same object outside the core
    cut: bool = False  # the object reached a side of the chunk's array that carries margin: seen in part

    def holds(self, row: int, col: int) -> bool:
        r, c = row - self.top, col - self.left
        return 0 <= r < self.mask.shape[0] and 0 <= c < self.mask.shape[1] and bool(self.mask[r, c])


def chunk_pieces(
    labels: np.ndarray,
    core: Core,
    origin: tuple[int, int],
    crossing: np.ndarray,
    votes: np.ndarray,
    cut: np.ndarray,
    inside: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> list[ObjectPiece]:
    """The pieces of the labels ``crossing`` (ascending; pixels inside and outside ``core``) of a
    chunk's int label array ``labels`` ``[H, W]`` whose ``[0, 0]`` lies at ``origin`` ``(x, y)`` of the
    output grid; ``votes[k]`` counts the types of ``crossing[k]``'s pixels in the core, ``cut[k]``
    says whether it was seen in part.
    The links: per crossing label, its first pixel (raster order) in each of the up to 8 strips of
    margin around the core. ``inside``: ``(rows, cols, k)`` of the crossing labels' pixels in the
    array, in raster order (``k``: the position in ``crossing``), which the caller has measured."""
    if not crossing.size:
        return []
    y0, x0, y1, x1 = core
    height, width = labels.shape
    # label -> 1 + its position in `crossing`, 0 if not; larger labels share the last entry, 0
    index = np.zeros(int(crossing.max()) + 2, np.int64)
    index[crossing] = np.arange(1, crossing.size + 1)
    x_origin, y_origin = (int(v) for v in origin)
    links: list[list[tuple[int, int]]] = [[] for _ in crossing]
    for rows in (slice(0, y0), slice(y0, y1), slice(y1, height)):
        for cols in (slice(0, x0), slice(x0, x1), slice(x1, width)):
            if rows == slice(y0, y1) and cols == slice(x0, x1):
                continue  # the core
            strip = labels[rows, cols]
            if not strip.size:
                continue
            flat = index[np.minimum(strip.ravel(), index.size - 1)]
            where = np.flatnonzero(flat)
            found, first = np.unique(flat[where], return_index=True)  # where ascends: first in raster order
            r, c = np.divmod(where[first], strip.shape[1])
            for k, row, col in zip((found - 1).tolist(), (r + rows.start).tolist(), (c + cols.start).tolist()):
                links[k].append((row + y_origin, col + x_origin))
    rows, cols, owners = inside
    kept = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    rows, cols, owners = rows[kept] - y0, cols[kept] - x0, owners[kept]
    order = np.argsort(owners, kind="stable")  # each piece's pixels stay in raster order
    rows, cols, owners = rows[order], cols[order], owners[order]
    starts = np.searchsorted(owners, np.arange(crossing.size + 1))
    pieces = []
    for k in range(crossing.size):
        piece_rows, piece_cols = rows[starts[k] : starts[k + 1]], cols[starts[k] : starts[k + 1]]
        top, left = int(piece_rows.min()), int(piece_cols.min())
        mask = np.zeros((int(piece_rows.max()) - top + 1, int(piece_cols.max()) - left + 1), bool)
        mask[piece_rows - top, piece_cols - left] = True
        position = (top + y0 + y_origin, left + x0 + x_origin)
        pieces.append(ObjectPiece(*position, mask, votes[k], np.array(links[k], np.int64), bool(cut[k])))
    return pieces


def pieces_text(pieces: Iterable[ObjectPiece]) -> str:
    """One line of JSON per piece (the mask as base64 of its packed bits)."""
    lines = []
    for piece in pieces:
        record = {
            "top": piece.top,
            "left": piece.left,
            "shape": list(piece.mask.shape),
            "mask": base64.b64encode(np.packbits(piece.mask, axis=None)).decode(),
            "votes": piece.votes.tolist(),
            "links": piece.links.reshape(-1, 2).tolist(),
            "cut": piece.cut,
        }
        lines.append(json.dumps(record, separators=(",", ":")))
    return "\n".join(lines)


def read_pieces(text: str) -> list[ObjectPiece]:
    """The pieces of :func:`pieces_text`."""
    pieces = []
    for line in text.splitlines():
        if not line:
            continue
        record = json.loads(line)
        shape = tuple(record["shape"])
        bits = np.frombuffer(base64.b64decode(record["mask"]), np.uint8)
        mask = np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
        links = np.array(record["links"], np.int64).reshape(-1, 2)
        votes = np.array(record["votes"], np.int64)
        pieces.append(ObjectPiece(record["top"], record["left"], mask, votes, links, record["cut"]))
    return pieces


def group_pieces(pieces: Sequence[ObjectPiece], chunk: int) -> list[list[int]]:
    """Indices of the pieces of each object: pieces joined where a link of one lands in another
    (``chunk``: the cores' side, which names the core a link lands in). Groups come in the order
    of their first piece."""
    by_core: dict[tuple[int, int], list[int]] = {}
    for k, piece in enumerate(pieces):
        by_core.setdefault((piece.top // chunk, piece.left // chunk), []).append(k)
    parent = list(range(len(pieces)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for k, piece in enumerate(pieces):
        for row, col in piece.links.tolist():
            for other in by_core.get((row // chunk, col // chunk), ()):
                if pieces[other].holds(row, col):
                    a, b = root(k), root(other)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
                    break
    groups: dict[int, list[int]] = {}
    for k in range(len(pieces)):
        groups.setdefault(root(k), []).append(k)
    return list(groups.values())


def piece_masks(pieces: Sequence[ObjectPiece], group: Sequence[int]) -> tuple[np.ndarray, int, int, np.ndarray]:
    """A group's pixels: ``(mask, top, left, votes)``, the mask over the group's bounding box and
    the type votes of all its pixels (each piece counted those in its chunk's core: each pixel once)."""
    members = [pieces[k] for k in group]
    top, left = min(p.top for p in members), min(p.left for p in members)
    bottom = max(p.top + p.mask.shape[0] for p in members)
    right = max(p.left + p.mask.shape[1] for p in members)
    mask = np.zeros((bottom - top, right - left), bool)
    votes = np.zeros(max(p.votes.size for p in members), np.int64)  # chunks may have seen fewer types
    for p in members:
        mask[p.top - top : p.top - top + p.mask.shape[0], p.left - left : p.left - left + p.mask.shape[1]] |= p.mask
        votes[: p.votes.size] += p.votes
    return mask, top, left, votes
