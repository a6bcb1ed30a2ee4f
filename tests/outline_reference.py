"""The per-object outline of a mask by OpenCV on a doubled lattice: the oracle that
vismtl.wsi.outlines.label_outlines (all objects at once, vectorised) is tested against.
This was the engine's own implementation before label_outlines replaced it."""

from __future__ import annotations

import cv2
import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient


def reference_polygon(mask: np.ndarray) -> list[tuple[float, float]]:
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


def _crack_ring(mask: np.ndarray) -> np.ndarray:
    """Vertices ``[N, 2]`` (x, y) of the largest outer boundary along pixel edges."""
    contours, lattice = lattice_contours(mask)
    return ring_of(max(contours, key=cv2.contourArea), lattice)


def lattice_contours(mask: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """OpenCV's outer contours of ``mask`` on a doubled lattice, and the lattice.

    Each pixel becomes a 3x3 block whose outer lattice points are its corners and edge
    midpoints, so OpenCV's pixel-centre tracing runs along pixel edges.
    """
    h, w = mask.shape
    lattice = np.zeros((2 * h + 3, 2 * w + 3), np.uint8)  # one lattice point of padding per side
    lattice[2:-2:2, 2:-2:2] = mask
    lattice = cv2.dilate(lattice, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(lattice, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return list(contours), lattice


def ring_of(contour: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """A lattice contour as pixel-corner vertices ``[N, 2]`` (x, y), turning points only; the
    corners OpenCV cuts diagonally at concave turns are put back."""
    points = _restore_concave_corners(contour[:, 0, :], lattice)
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
