"""Procedural H&E-like histology tiles with nuclei, gland, lumen and tissue labels.

Tissue model (fixed magnification: a pixel is the same size at every tile size, so a
larger tile shows more tissue, not bigger cells; nuclei have radii of about 2-11 px):

* Colour follows Beer-Lambert: the scene is painted as per-pixel hematoxylin and eosin
  concentrations, blurred slightly (optics) and turned into RGB with per-tile jittered
  stain vectors and strengths, plus mild sensor noise. Nuclei are purple-blue, stroma
  and muscle pink, lumina, fat and empty glass near white.
* The tissue class is drawn first (balanced: every 9 consecutive indices of a seed hold
  each class once, in random order) and decides the content: "background" blank glass;
  "normal epithelium" regular round glands with one basal row of nuclei and goblet
  vacuoles, lamina propria and often a surface-epithelium band; "abnormal epithelium"
  large irregular crowded glands, 1-3 rows of big dark nuclei, bridged lumina;
  "inflammatory" stroma crowded by lymphocytes with plasma cells, neutrophils and
  eosinophils; "muscle" parallel dense-pink fibres with aligned spindle nuclei;
  "stroma" pale wavy collagen with sparse spindle nuclei; "debris" pink-purple
  fragments, nuclear dust and neutrophils on glass; "mucous" pale-blue wisps;
  "adipose" large empty polygonal cells with flattened nuclei on their membranes.
* Nucleus types look different: lymphocytes small, round, very dark; epithelial nuclei
  larger pale ovals across the gland wall; connective nuclei thin spindles; plasma
  cells eccentric nuclei in purple cytoplasm with a pale halo; neutrophils 3-4 small
  overlapping lobes in pale cytoplasm; eosinophils two lobes in bright red cytoplasm.

Label conventions (every instance map: 0 is background, ids are 1..K without gaps in
drawing order, instances never overlap and each is one 4-connected region of at least
10 px with at least 6 px left after a 3x3 erosion; nuclei and lumina are also opened by a
3x3 square (no parts thinner than 3 px); smaller, thinner or split remnants are dropped
and painted as what lies under them):

* ``nuclei_inst``/``nuclei_type``: nucleus ids and ``NUCLEUS_TYPES`` indices, type > 0
  exactly on nucleus pixels and constant per nucleus. Where nuclei overlap, the
  earlier one wins; a multi-lobed nucleus is one instance.
* ``gland_inst``/``gland_type``: a gland is its epithelial ring plus its lumen (type 1);
  a surface-epithelium band along one image edge is a gland instance too, of type 2,
  without lumen. ``gland_type > 0`` exactly where ``gland_inst > 0``.
* ``lumen_inst``: lumina, always inside a gland; a gland may hold several.
* ``tissue_class``: index into ``TISSUE_CLASSES``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np
from scipy import ndimage
from skimage.measure import label as _components

NUCLEUS_TYPES = ("background", "neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective")
GLAND_TYPES = ("background", "gland", "surface epithelium")
TISSUE_CLASSES = (
    "background", "abnormal epithelium", "normal epithelium", "inflammatory", "muscle", "stroma", "debris", "mucous",
    "adipose",
)  # fmt: skip

_NEU, _EPI, _LYM, _PLA, _EOS, _CON = range(1, 7)
_GLAND, _SURFACE = 1, 2
_MIN_SIZE = 10
# Slivers (e.g. crescents left where nuclei overlap) thinner than 3 px are dropped too: no
# annotator would draw them, and no interior/contour target could represent them.
_MIN_CORE = 6
_F32 = np.float32
_Rng = np.random.Generator

# optical density per unit concentration in (R, G, B): hematoxylin (Ruifrok) and eosin
_HEMATOXYLIN = np.array([0.65, 0.70, 0.29], _F32)
_EOSIN = np.array([0.22, 0.80, 0.48], _F32)
_GLASS = (0.015, 0.025)  # (hematoxylin, eosin) concentrations
_LUMEN = (0.02, 0.04)
# per nucleus type: hematoxylin range, eosin, chromatin texture amplitude
_NUCLEUS_STAIN = {
    _NEU: (1.35, 1.65, 0.15, 0.1),
    _EPI: (0.75, 1.0, 0.1, 0.45),
    _LYM: (1.55, 1.9, 0.05, 0.08),
    _PLA: (1.1, 1.35, 0.1, 0.5),
    _EOS: (1.0, 1.25, 0.55, 0.2),
    _CON: (1.1, 1.4, 0.15, 0.2),
}
# cytoplasm codes drawn around some cells: neutrophil, plasma, perinuclear halo, eosinophil, goblet mucin
_CYTO_NEU, _CYTO_PLA, _CYTO_HALO, _CYTO_EOS, _CYTO_GOBLET = range(1, 6)
_CYTO_STAIN = np.array([[0, 0], [0.1, 0.35], [0.45, 0.45], [0.05, 0.12], [0.12, 1.4], [0.22, 0.06]], _F32)

# (x, y, semi-axis along angle, other semi-axis, angle in degrees)
_Ellipse = tuple[float, float, float, float, float]


class _Nucleus(NamedTuple):
    kind: int
    hema: float
    eosin: float
    texture: float
    ellipses: list[_Ellipse]


@dataclass
class _Tile:
    stain: np.ndarray  # (H, W, 2) float32 hematoxylin and eosin concentrations
    gland: np.ndarray  # (H, W) int32 gland ids in drawing order
    lumen: np.ndarray  # (H, W) int32 id of the enclosing gland on lumen pixels
    cyto: np.ndarray  # (H, W) uint8 cytoplasm codes
    occupied: np.ndarray  # (H, W) uint8 glands, bands and their margins: no new gland and no stromal cell
    epithelium: tuple[float, float] = (0.12, 0.5)  # gland cytoplasm stain
    gland_types: list[int] = field(default_factory=lambda: [0])
    nuclei: list[_Nucleus] = field(default_factory=list)


def _fixed(points: np.ndarray) -> np.ndarray:
    """Float (N, 2) points to cv2's 4-bit fixed point, for sub-pixel polygons."""
    return np.round(points * 16).astype(np.int32)


def _smooth_noise(rng: _Rng, h: int, w: int, cell: float) -> np.ndarray:
    """Value noise in about [0, 1] with features of ``cell`` pixels."""
    grid = rng.random((int(h / cell) + 2, int(w / cell) + 2), dtype=_F32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _grain(rng: _Rng, h: int, w: int) -> np.ndarray:
    """Fine triangular noise in [-1, 1] from raw bytes: much cheaper than Gaussian draws."""
    raw = np.frombuffer(rng.bytes(2 * h * w), np.uint8).reshape(2, h, w)
    return cv2.blur((raw[0].astype(_F32) - raw[1]) / _F32(255), (2, 2))


def _fibres(
    rng: _Rng, h: int, w: int, angle: float, length: float, width: float, bend: float
) -> tuple[np.ndarray, np.ndarray]:
    """Streaks of ``length`` x ``width`` px along ``angle`` (radians), bent by smooth noise.

    Returns the streak texture in [0, 1] and the coordinate across the fibres (px).
    """
    ys, xs = np.mgrid[0:h, 0:w].astype(_F32)
    c, s = math.cos(angle), math.sin(angle)
    across = -xs * s + ys * c + (_smooth_noise(rng, h, w, 64) - 0.5) * bend
    src = rng.random((256, 64), dtype=_F32)  # rows across, columns along the fibres
    tex = cv2.remap(src, (xs * c + ys * s) / length, across / width, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return tex, across


def _scatter(rng: _Rng, density: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Jittered-grid points kept with probability ``density`` (H, W): even, few overlaps."""
    h, w = density.shape
    ys, xs = np.mgrid[0:h:spacing, 0:w:spacing]
    ys = (ys + rng.uniform(0, spacing, ys.shape)).ravel().clip(0, h - 1)
    xs = (xs + rng.uniform(0, spacing, xs.shape)).ravel().clip(0, w - 1)
    keep = rng.random(ys.size) < density[ys.astype(int), xs.astype(int)]
    return xs[keep], ys[keep]


def _spaced(line: np.ndarray, spacing: float, rng: _Rng, closed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``spacing`` px of arc length along a polyline and the tangent angles (deg)."""
    if closed:
        line = np.vstack([line, line[:1]])
    seg = np.diff(line, axis=0)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))])
    s = np.arange(rng.uniform(0, spacing), arc[-1], spacing)
    k = np.clip(np.searchsorted(arc, s) - 1, 0, len(seg) - 1)
    points = np.stack([np.interp(s, arc, line[:, 0]), np.interp(s, arc, line[:, 1])], axis=1)
    return points, np.degrees(np.arctan2(seg[k, 1], seg[k, 0]))


def _add_nucleus(tile: _Tile, kind: int, u: float, ellipses: list[_Ellipse], darker: float = 0.0) -> None:
    lo, hi, eosin, texture = _NUCLEUS_STAIN[kind]
    tile.nuclei.append(_Nucleus(kind, lo + (hi - lo) * u + darker, eosin, texture, ellipses))


def _draw_cyto(tile: _Tile, code: int, x: float, y: float, ax: float, ay: float, angle: float = 0.0) -> None:
    centre, axes = (round(x * 16), round(y * 16)), (round(ax * 16), round(ay * 16))
    cv2.ellipse(tile.cyto, centre, axes, angle, 0, 360, code, -1, cv2.LINE_8, 4)


def _cell(tile: _Tile, kind: int, x: float, y: float, u: list[float], angle: float | None) -> list[_Ellipse]:
    """Nucleus ellipses of one non-epithelial cell from uniforms ``u``; draws its cytoplasm."""
    turn = 360 * u[2]
    if kind == _LYM:
        r = 3.6 + 1.3 * u[0]
        return [(x, y, r, r * (0.85 + 0.15 * u[1]), turn)]
    if kind == _CON:  # spindle, along the fibres when ``angle`` (deg) is given
        return [(x, y, 6.5 + 4.5 * u[0], 1.8 + 1.0 * u[1], turn if angle is None else angle + 40 * (u[2] - 0.5))]
    c, s = math.cos(math.radians(turn)), math.sin(math.radians(turn))
    if kind == _PLA:  # eccentric nucleus, cytoplasm to one side, pale hof beside the nucleus
        r = 3.8 + 1.2 * u[0]
        _draw_cyto(tile, _CYTO_PLA, x + 0.9 * r * c, y + 0.9 * r * s, 2.0 * r, 1.6 * r, turn)
        _draw_cyto(tile, _CYTO_HALO, x + 1.2 * r * c, y + 1.2 * r * s, 0.6 * r, 0.6 * r)
        return [(x, y, r, 0.9 * r, turn)]
    if kind == _NEU:  # a chain of 3-4 overlapping lobes: one instance
        r = 2.4 + 0.6 * u[0]
        _draw_cyto(tile, _CYTO_NEU, x, y, 7.0, 7.0)
        phis = np.radians(turn + 100 * np.arange(3 + (u[1] > 0.5))).tolist()
        return [(x + 2.3 * math.cos(p), y + 2.3 * math.sin(p), r, r, 0.0) for p in phis]
    r = 2.8 + 0.6 * u[0]  # eosinophil: two lobes in bright granular cytoplasm
    _draw_cyto(tile, _CYTO_EOS, x, y, 7.0 + 1.5 * u[1], 6.5 + 1.5 * u[1], turn)
    return [(x + 1.9 * c, y + 1.9 * s, r, r, 0.0), (x - 1.9 * c, y - 1.9 * s, r, r, 0.0)]


def _add_cells(rng: _Rng, tile: _Tile, populations: tuple, angle: float | None = None) -> None:
    """Scatter (kind, density, spacing) populations over the free pixels, in order."""
    for kind, density, spacing in populations:
        xs, ys = _scatter(rng, (tile.occupied == 0) * np.asarray(density, _F32), spacing)
        for x, y, u in zip(xs.tolist(), ys.tolist(), rng.random((xs.size, 4)).tolist()):
            _add_nucleus(tile, kind, u[3], _cell(tile, kind, x, y, u, angle))


def _epithelial_row(rng: _Rng, tile: _Tile, line: np.ndarray, closed: bool, abnormal: bool) -> None:
    """A row of epithelial nuclei along ``line`` (already inset), long axes across the epithelium."""
    width = rng.uniform(3.8, 5.0) if abnormal else rng.uniform(2.6, 3.2)
    points, tangent = _spaced(line, 2 * width + (0.5 if abnormal else 1.5), rng, closed)
    u = rng.random((len(points), 3))
    length = (6.0 + 3.0 * u[:, 0]) if abnormal else (4.5 + 1.5 * u[:, 0])
    shift = (u[:, 1] - 0.5) * (4.0 if abnormal else 1.0)  # pseudostratification when abnormal
    normal = np.radians(tangent + 90)
    xs, ys = points[:, 0] + shift * np.cos(normal), points[:, 1] + shift * np.sin(normal)
    for x, y, ln, ang, v in zip(xs.tolist(), ys.tolist(), length.tolist(), (tangent + 90).tolist(), u[:, 2].tolist()):
        _add_nucleus(tile, _EPI, v, [(x, y, ln, width, ang)], darker=0.45 if abnormal else 0.0)


def _gland_outline(rng: _Rng, tile: _Tile, abnormal: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A star-shaped outline: centre (2,), radius (72,) and unit directions (72, 2) per angle."""
    h, w = tile.gland.shape
    a = rng.uniform(26, 44) if abnormal else rng.uniform(21, 30)
    b, rot = a * rng.uniform(0.5 if abnormal else 0.72, 1.0), rng.uniform(0, math.pi)
    theta = np.linspace(0, 2 * math.pi, 72, endpoint=False)
    radius = a * b / np.hypot(b * np.cos(theta - rot), a * np.sin(theta - rot))
    for k, amp in zip((2, 3, 4), rng.uniform(0.04, 0.16, 3) if abnormal else rng.uniform(0, 0.04, 3)):
        radius *= 1 + amp * np.cos(k * theta + rng.uniform(0, 2 * math.pi))  # irregular when abnormal
    centre = rng.uniform((0, 0), (w - 1, h - 1))  # inside the tile: clipping keeps the gland connected
    return centre, radius, np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _overlaps(tile: _Tile, outline: np.ndarray) -> bool:
    """Whether a polygon touches occupied pixels, rasterised in its bounding box only."""
    h, w = tile.gland.shape
    x0, y0 = np.maximum(np.floor(outline.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(outline.max(0)).astype(int) + 1, (w, h))
    local = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(local, [_fixed(outline - (x0, y0))], 1, cv2.LINE_8, 4)
    return bool(np.any(local & tile.occupied[y0:y1, x0:x1]))


def _draw_gland(rng: _Rng, tile: _Tile, centre: np.ndarray, radius: np.ndarray, unit: np.ndarray, abnormal: bool):
    """Gland, lumen and occupancy labels, then the epithelial nuclei (and goblet cells)."""

    def ring(depth: float | np.ndarray) -> np.ndarray:  # the outline inset by depth px
        return centre + (radius - depth)[:, None] * unit

    tile.gland_types.append(_GLAND)
    gid = len(tile.gland_types) - 1
    thickness = rng.uniform(15, 26) if abnormal else rng.uniform(13, 16)
    cv2.fillPoly(tile.gland, [_fixed(ring(0))], gid, cv2.LINE_8, 4)
    cv2.fillPoly(tile.lumen, [_fixed(ring(np.minimum(thickness, 0.7 * radius)))], gid, cv2.LINE_8, 4)
    cv2.fillPoly(tile.occupied, [_fixed(ring(0))], 1, cv2.LINE_8, 4)
    cv2.polylines(tile.occupied, [_fixed(ring(0))], True, 1, 5 if abnormal else 14, cv2.LINE_8, 4)
    if abnormal:  # cribriform bridges of epithelium split the lumen; 1-3 crowded rows of nuclei
        for _ in range(int(rng.integers(0, 3))):
            p, d = centre + rng.uniform(-0.3, 0.3, 2) * radius.min(), rng.normal(size=2) * radius.max()
            cv2.line(tile.lumen, tuple(map(int, p - d)), tuple(map(int, p + d)), 0, int(rng.integers(4, 7)))
        for row in range(1 + int(thickness > 19) + int(thickness > 25)):  # the rows that fit the wall
            _epithelial_row(rng, tile, ring(6.5 + 6.0 * row), True, True)
        return
    goblets, _ = _spaced(ring(thickness - 4.0), rng.uniform(9, 12), rng, True)
    for x, y in goblets.tolist():
        _draw_cyto(tile, _CYTO_GOBLET, x, y, 3.0, 3.6, math.degrees(math.atan2(y - centre[1], x - centre[0])))
    _epithelial_row(rng, tile, ring(5.5), True, False)


def _add_glands(rng: _Rng, tile: _Tile, abnormal: bool, count: int) -> None:
    placed = 0
    for _ in range(6 * count):
        centre, radius, unit = _gland_outline(rng, tile, abnormal)
        if not _overlaps(tile, centre + radius[:, None] * unit):
            _draw_gland(rng, tile, centre, radius, unit, abnormal)
            placed += 1
        if placed == count:
            return


def _edge_points(edge: int, along: np.ndarray, depth: np.ndarray, h: int, w: int) -> np.ndarray:
    """Band coordinates (along the edge, depth into the tile) to image (x, y) for edge 0-3: top, bottom, left, right."""
    x, y = [(along, depth), (along, h - 1 - depth), (depth, along), (w - 1 - depth, along)][edge]
    return np.stack([x, y], axis=1)


def _add_surface(rng: _Rng, tile: _Tile) -> None:
    """Surface epithelium: a wavy band along one edge, glass (the gut lumen) beyond it."""
    h, w = tile.gland.shape
    edge = int(rng.integers(4))
    along = np.linspace(-4, (w if edge < 2 else h) + 3, 48)
    knots = np.linspace(along[0], along[-1], 6)
    outer = np.clip(np.interp(along, knots, rng.uniform(-6, 9, 6)), 0, None)
    inner = outer + rng.uniform(15, 20) + np.interp(along, knots, rng.uniform(-2, 2, 6))
    band = np.vstack([_edge_points(edge, along, outer, h, w), _edge_points(edge, along, inner, h, w)[::-1]])
    glass = np.vstack([_edge_points(edge, along, outer, h, w), _edge_points(edge, along, outer * 0 - 6, h, w)[::-1]])
    tile.gland_types.append(_SURFACE)
    cv2.fillPoly(tile.gland, [_fixed(band)], len(tile.gland_types) - 1, cv2.LINE_8, 4)
    cv2.fillPoly(tile.stain, [_fixed(glass)], _GLASS, cv2.LINE_8, 4)
    for poly in (band, glass):
        cv2.fillPoly(tile.occupied, [_fixed(poly)], 1, cv2.LINE_8, 4)
    cv2.polylines(tile.occupied, [_fixed(_edge_points(edge, along, inner, h, w))], False, 1, 14, cv2.LINE_8, 4)
    _epithelial_row(rng, tile, _edge_points(edge, along, inner - 5.5, h, w), False, False)


def _paint_stroma(rng: _Rng, tile: _Tile, strength: float) -> float:
    """Wavy collagen fibres with loose gaps; returns the fibre angle (deg) for spindle nuclei."""
    h, w = tile.gland.shape
    angle = rng.uniform(0, math.pi)
    fib, _ = _fibres(rng, h, w, angle, rng.uniform(10, 18), rng.uniform(1.6, 2.6), rng.uniform(15, 40))
    loose = _smooth_noise(rng, h, w, rng.uniform(25, 50))
    eosin = strength * np.clip(1.6 * fib - 0.3, 0.05, 1.0) * np.clip(0.4 + 0.8 * loose, 0.2, 1.1)
    tile.stain[..., 1] = eosin
    tile.stain[..., 0] = 0.05 + 0.1 * eosin
    return math.degrees(angle)


def _paint_glass(rng: _Rng, tile: _Tile) -> None:
    h, w = tile.gland.shape
    tile.stain[:] = _GLASS
    tile.stain[..., 1] += 0.03 * _smooth_noise(rng, h, w, 60)


def _area(tile: _Tile) -> float:
    return tile.gland.shape[0] * tile.gland.shape[1] / 256**2


def _normal(rng: _Rng, tile: _Tile) -> None:
    angle = _paint_stroma(rng, tile, rng.uniform(0.3, 0.45))  # lamina propria: loose and cellular
    if rng.random() < 0.6:
        _add_surface(rng, tile)
    _add_glands(rng, tile, False, round(rng.uniform(5, 9) * _area(tile)))
    _add_cells(rng, tile, ((_LYM, 0.25, 12), (_PLA, 0.15, 15), (_CON, 0.08, 16), (_EOS, 0.03, 18)), angle)


def _abnormal(rng: _Rng, tile: _Tile) -> None:
    tile.epithelium = (0.3, 0.55)  # basophilic cytoplasm
    angle = _paint_stroma(rng, tile, rng.uniform(0.45, 0.6))
    _add_glands(rng, tile, True, round(rng.uniform(3, 6) * _area(tile)))
    _add_cells(rng, tile, ((_CON, 0.12, 15), (_LYM, 0.08, 12)), angle)


def _inflammatory(rng: _Rng, tile: _Tile) -> None:
    if rng.random() < 0.3:
        _add_glands(rng, tile, False, 1)
    _paint_stroma(rng, tile, rng.uniform(0.3, 0.45))
    h, w = tile.gland.shape
    patches = np.clip(0.2 + 1.0 * _smooth_noise(rng, h, w, rng.uniform(40, 90)), 0.3, 0.95)
    _add_cells(rng, tile, ((_LYM, patches, 9.5), (_PLA, 0.15, 14), (_NEU, 0.12, 15), (_EOS, 0.1, 15)))


def _muscle(rng: _Rng, tile: _Tile) -> None:
    h, w = tile.gland.shape
    angle = rng.uniform(0, math.pi)
    fib, across = _fibres(rng, h, w, angle, rng.uniform(30, 50), rng.uniform(1.5, 2.5), rng.uniform(5, 20))
    bands = np.cos(across * _F32(2 * math.pi / rng.uniform(9, 16)))
    eosin = rng.uniform(0.75, 0.95) * (0.8 + 0.25 * fib) * np.where(bands > -0.85, _F32(1), _F32(0.5))
    tile.stain[..., 1] = eosin
    tile.stain[..., 0] = 0.1 + 0.08 * eosin
    _add_cells(rng, tile, ((_CON, rng.uniform(0.2, 0.35), 15), (_LYM, 0.02, 16)), math.degrees(angle))


def _stroma(rng: _Rng, tile: _Tile) -> None:
    angle = _paint_stroma(rng, tile, rng.uniform(0.45, 0.7))
    _add_cells(rng, tile, ((_CON, rng.uniform(0.12, 0.22), 16), (_LYM, 0.04, 16), (_PLA, 0.02, 16)), angle)


def _debris(rng: _Rng, tile: _Tile) -> None:
    _paint_glass(rng, tile)
    h, w = tile.gland.shape
    for _ in range(int(rng.integers(40, 80) * _area(tile))):  # irregular pink-purple fragments
        centre, n = rng.uniform((0, 0), (w, h)), int(rng.integers(5, 9))
        theta = np.sort(rng.uniform(0, 2 * math.pi, n))
        pts = centre + rng.uniform(2, 12) * rng.uniform(0.4, 1.0, (n, 1)) * np.stack([np.cos(theta), np.sin(theta)], 1)
        cv2.fillPoly(tile.stain, [_fixed(pts)], (rng.uniform(0.15, 0.6), rng.uniform(0.4, 1.0)), cv2.LINE_8, 4)
    for x, y in rng.uniform((0, 0), (w, h), (int(60 * _area(tile)), 2)).astype(int).tolist():
        cv2.circle(tile.stain, (x, y), 1, (1.4, 0.2))  # nuclear dust: too small to be a nucleus
    _add_cells(rng, tile, ((_NEU, 0.15, 14), (_LYM, 0.03, 16)))


def _mucous(rng: _Rng, tile: _Tile) -> None:
    _paint_glass(rng, tile)
    h, w = tile.gland.shape
    wisps, _ = _fibres(rng, h, w, rng.uniform(0, math.pi), rng.uniform(20, 40), rng.uniform(3, 6), rng.uniform(40, 90))
    cloud = _smooth_noise(rng, h, w, rng.uniform(40, 80))
    tile.stain[..., 0] += rng.uniform(0.25, 0.4) * np.clip(1.5 * wisps - 0.3, 0, 1) * np.clip(cloud + 0.3, 0, 1)
    tile.stain[..., 1] += 0.05 * wisps
    _add_cells(rng, tile, ((_NEU, 0.03, 16), (_LYM, 0.02, 16)))


def _adipose(rng: _Rng, tile: _Tile) -> None:
    """Voronoi cells of fat: glass interiors, thin pink membranes, flattened nuclei on them."""
    h, w = tile.gland.shape
    xs, ys = _scatter(rng, np.ones((h, w), _F32), rng.uniform(32, 48))
    seeds = np.full((h, w), 255, np.uint8)
    seeds[ys.astype(int), xs.astype(int)] = 0
    _, cells = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    edge = np.zeros((h, w), np.uint8)
    edge[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    edge[:-1] |= cells[:-1] != cells[1:]
    edge = cv2.dilate(edge, np.ones((2, 2), np.uint8))
    _paint_glass(rng, tile)
    tile.stain[edge > 0] = (0.08, rng.uniform(0.5, 0.7))
    centres = np.zeros((int(cells.max()) + 1, 2))
    centres[cells[ys.astype(int), xs.astype(int)]] = np.stack([xs, ys], 1)
    on_edge = np.flatnonzero(edge)
    picks = rng.choice(on_edge, min(on_edge.size, int(rng.integers(4, 10) * _area(tile))), replace=False)
    py, px = np.divmod(picks, w)
    cx, cy = centres[cells[py, px]].T
    tangent = np.degrees(np.arctan2(py - cy, px - cx)) + 90  # membranes are tangent to their cell
    for x, y, ang, u in zip(px.tolist(), py.tolist(), tangent.tolist(), rng.random((picks.size, 2)).tolist()):
        _add_nucleus(tile, _CON, u[0], [(x, y, 6.0 + 3.0 * u[1], 1.8, ang)])


# indexed by tissue class
_RECIPES: tuple[Callable[[_Rng, _Tile], None], ...] = (
    _paint_glass, _abnormal, _normal, _inflammatory, _muscle, _stroma, _debris, _mucous, _adipose,
)  # fmt: skip


def _rasterise_nuclei(shape: tuple[int, int], nuclei: list[_Nucleus]) -> np.ndarray:
    canvas = np.zeros(shape, np.int32)
    for i in range(len(nuclei) - 1, -1, -1):  # reverse order: earlier nuclei end up on top
        for x, y, ax, ay, angle in nuclei[i].ellipses:
            centre, axes = (round(x * 16), round(y * 16)), (round(ax * 16), round(ay * 16))
            cv2.ellipse(canvas, centre, axes, angle, 0, 360, i + 1, -1, cv2.LINE_8, 4)
    return canvas


def _core_sizes(comp: np.ndarray, n: int) -> np.ndarray:
    """Per region: pixels whose eight neighbours belong to the same region (its 3x3 erosion)."""
    height, width = comp.shape
    padded = np.pad(comp, 1, mode="edge")
    core = np.ones(comp.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            core &= padded[dy : dy + height, dx : dx + width] == comp
    return np.bincount(comp[core], minlength=n + 1)


def _open_instances(inst: np.ndarray) -> np.ndarray:
    """Each instance opened by a 3x3 square: parts thinner than 3 px (tails, necks) are removed.

    Annotators outline nuclei and lumina as blobs, not 1-px slivers; and an opened shape is
    exactly what eroding and dilating it again gives back, as the instance targets do.
    """
    height, width = inst.shape
    core = _open_core(inst) & (inst > 0)
    core_ids = np.pad(np.where(core, inst, 0), 1)
    opened = np.zeros(inst.shape, bool)
    for dy in range(3):
        for dx in range(3):
            opened |= core_ids[dy : dy + height, dx : dx + width] == inst
    return np.where(opened & (inst > 0), inst, 0)


def _split_at_necks(inst: np.ndarray) -> np.ndarray:
    """Lumina joined only by necks under 3 px become separate lumina (split at the neck).

    Each connected piece of the 3x3-eroded core is one lumen; the remaining pixels join the
    nearest piece. Without this, a bridged lumen would be one object whose interior (the
    training target) falls apart into several.
    """
    core = (inst > 0) & (_open_core(inst))
    pieces, _ = ndimage.label(core, structure=np.ones((3, 3), bool))
    if not pieces.any():
        return np.zeros_like(inst)
    _, (rows, cols) = ndimage.distance_transform_cdt(pieces == 0, metric="chessboard", return_indices=True)
    return np.where(inst > 0, pieces[rows, cols], 0).astype(np.int32)


def _open_core(inst: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood lies in their own instance."""
    height, width = inst.shape
    padded = np.pad(inst, 1, mode="edge")
    return np.logical_and.reduce(
        [padded[dy : dy + height, dx : dx + width] == inst for dy in range(3) for dx in range(3)]
    )


def _clean_instances(inst: np.ndarray, split: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Renumber instances 1..K keeping one 4-connected region of >= _MIN_SIZE px each.

    ``split=False`` keeps the largest region of every id; ``split=True`` makes every
    region of ``inst > 0`` its own instance. Returns the new map and, per new id, the
    old id (index 0 unused: old ids of the instances 1..K).
    """
    comp = _components(inst > 0 if split else inst, background=0, connectivity=1)
    n = int(comp.max())
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    owner = np.zeros(n + 1, np.int64)
    owner[comp.ravel()] = inst.ravel()
    keep = (sizes >= _MIN_SIZE) & (_core_sizes(comp, n) >= _MIN_CORE)
    keep[0] = False
    if not split:  # one region per id: the largest, the first on ties
        best = np.zeros(int(owner.max()) + 1, np.int64)
        np.maximum.at(best, owner, sizes * keep)
        keep &= sizes == best[owner]
        first = np.full(best.size, n + 1)
        np.minimum.at(first, owner[keep], np.flatnonzero(keep))
        keep &= np.arange(n + 1) == first[owner]
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(owner[kept], kind="stable")]
    relabel = np.zeros(n + 1, np.int32)
    relabel[kept] = np.arange(1, kept.size + 1)
    return relabel[comp], np.concatenate([[0], owner[kept]])


def _paint_nuclei(tile: _Tile, inst: np.ndarray, owner: np.ndarray, grain: np.ndarray) -> None:
    params = np.array([[0, 0, 0]] + [[n.hema, n.eosin, n.texture] for n in tile.nuclei], _F32)[owner]
    mask = inst > 0
    ids = inst[mask]
    hema = params[ids, 0] * (1 + params[ids, 2] * grain[mask])
    ids_f = inst.astype(_F32)  # exact below 2**24; cv2 morphology has no int32
    rim = cv2.erode(ids_f, None) != cv2.dilate(ids_f, None)  # a darker nuclear membrane where the id changes
    tile.stain[mask] = np.stack([hema * np.where(rim[mask], _F32(1.25), _F32(1)), params[ids, 1]], axis=1)


def _to_rgb(rng: _Rng, stain: np.ndarray) -> np.ndarray:
    """Beer-Lambert with per-tile stain vectors and strengths, optical blur and sensor noise."""
    h, w = stain.shape[:2]
    stain = cv2.GaussianBlur(stain, (0, 0), 0.6)
    vectors = np.stack([_HEMATOXYLIN * rng.uniform(0.9, 1.1, 3), _EOSIN * rng.uniform(0.9, 1.1, 3)])
    vectors *= rng.uniform(0.85, 1.15, (2, 1))
    od = stain.reshape(-1, 2) @ vectors.astype(_F32) + rng.uniform(0.0, 0.05, 3).astype(_F32)
    rgb = np.exp(-od).reshape(h, w, 3) * _F32(255)
    rgb += _grain(rng, h, w)[..., None] * _F32(rng.uniform(3, 8))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _sample_class(seed: int, index: int) -> int:
    """Every block of 9 consecutive indices holds each tissue class once."""
    block = np.random.default_rng([seed, index // len(TISSUE_CLASSES), len(TISSUE_CLASSES)])
    return int(block.permutation(len(TISSUE_CLASSES))[index % len(TISSUE_CLASSES)])


def render_tissue(seed: int, index: int, height: int = 256, width: int = 256) -> dict[str, np.ndarray | int]:
    """Render tile ``index`` of dataset ``seed``, bit-identical for equal arguments.

    Returns ``image`` uint8 (H, W, 3) RGB, ``nuclei_inst``, ``gland_inst``, ``lumen_inst``
    int32 (H, W), ``nuclei_type``, ``gland_type`` uint8 (H, W) and ``tissue_class`` int;
    the module docstring gives the conventions.
    """
    rng = np.random.default_rng([seed, index])
    tissue_class = _sample_class(seed, index)
    z = np.zeros((height, width), np.int32)
    tile = _Tile(np.zeros((height, width, 2), _F32), z, z.copy(), z.astype(np.uint8), z.astype(np.uint8))
    _RECIPES[tissue_class](rng, tile)

    gland, gland_owner = _clean_instances(tile.gland)
    gland_type = np.array(tile.gland_types, np.uint8)[gland_owner][gland]
    nuclei, nuclei_owner = _clean_instances(_open_instances(_rasterise_nuclei((height, width), tile.nuclei)))
    # a lumen is empty space: nuclei bulging into it are carved out
    lumen = _split_at_necks(_open_instances(np.where((gland > 0) & (nuclei == 0), tile.lumen, 0)))
    lumen, _ = _clean_instances(lumen)
    kinds = np.array([0] + [n.kind for n in tile.nuclei], np.uint8)
    grain = _grain(rng, height, width)

    epithelium = (gland > 0) & (lumen == 0)
    tile.stain[epithelium] = np.array(tile.epithelium, _F32) * (1 + 0.2 * grain[epithelium, None])
    cyto = tile.cyto > 0
    tile.stain[cyto] = _CYTO_STAIN[tile.cyto[cyto]] * (1 + 0.3 * grain[cyto, None])
    tile.stain[lumen > 0] = _LUMEN
    _paint_nuclei(tile, nuclei, nuclei_owner, grain)
    return {
        "image": _to_rgb(rng, tile.stain),
        "nuclei_inst": nuclei,
        "nuclei_type": kinds[nuclei_owner][nuclei],
        "gland_inst": gland,
        "gland_type": gland_type,
        "lumen_inst": lumen,
        "tissue_class": tissue_class,
    }
