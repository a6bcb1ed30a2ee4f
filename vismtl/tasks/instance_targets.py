"""Instance-segmentation targets and post-processing for nuclei, glands and lumina.

Targets follow Cerberus (Graham et al., "One model is all you need: multi-task learning enables
simultaneous histology image segmentation and classification", Medical Image Analysis 2023): each
instance task is learnt as a 3-class map, 0 background, 1 eroded interior, 2 contour band, with

    interior(j) = erode(instance j, r_in)      contour(j) = dilate(instance j, r_out) - interior(j)

Morphology (exact definitions used everywhere below):

- Erosion is by the (2 r + 1)^2 square (chessboard distance): ``erode(m, r) = {p in m:
  cdist(p, not m) > r}``; the post-processing grows interiors back by the same square, so an
  object that is open under that square is recovered exactly, with no pixel outside it.
  Dilation (the outer half of the band) uses the Euclidean disk: ``dilate(m, r) = {p:
  dist(p, m) <= r}``. Both are computed with distance transforms inside a window around the
  instance.
- A band of width ``k`` is split as ``r_in = k // 2`` (pixels removed inside) and
  ``r_out = k - r_in`` (pixels added outside), so a straight cut across the boundary meets exactly
  ``k`` contour pixels (k = 3: 1 in + 2 out; k = 11: 5 in + 6 out). The odd pixel goes outside so
  that small nuclei keep an interior.
- Pixels beyond the image border are *not* background: an instance cut by the crop gets no
  contour along the image edge (a crop edge is not an object boundary).
- Overlaps: inside an object a pixel is interior or contour by its own object alone (touching
  objects meet along their own contour pixels, so they stay separated); the outer half of a band
  only claims background, so a neighbour's band never eats into another object's interior, which
  would erase the markers of small, crowded nuclei.

The boundary weight map is the one of U-Net (Ronneberger et al., MICCAI 2015),
``w(x) = w_c(x) + w0 * exp(-((d1(x) + d2(x)) / sigma)^2 / 2)``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from vismtl.tasks.seed_growth import expand_chessboard, fill_holes

BACKGROUND, INTERIOR, CONTOUR = 0, 1, 2


EIGHT = np.ones((3, 3), bool)  # 8-connectivity for labelling


def label_components(mask: np.ndarray) -> np.ndarray:
    """int32 ids ``1..K`` of the 8-connected components of a 2-D ``mask``, 0 elsewhere.

    ``ndi.label(mask, structure=EIGHT)[0]`` exactly, numbering included (first pixel in scan
    order): OpenCV's Wu labelling numbers components the same way and is faster; its block-based
    default (Spaghetti) numbers them differently.
    """
    mask = np.asarray(mask)
    if not mask.size:
        return np.zeros(mask.shape, np.int32)
    pixels = mask.view(np.uint8) if mask.dtype == bool else (mask != 0).astype(np.uint8)
    return cv2.connectedComponentsWithAlgorithm(pixels, 8, cv2.CV_32S, cv2.CCL_WU)[1]


def band_radii(band: int) -> tuple[int, int]:
    """Band width ``k`` -> ``(r_in, r_out)`` with ``r_in + r_out == k`` (see the module docstring)."""
    if band < 0:
        raise ValueError(f"band must be >= 0, got {band}")
    return band // 2, band - band // 2


def unique_ids(inst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(inst, return_inverse=True)`` for ids >= 0: (sorted ids, int32 indices shaped like inst).

    Ids up to a few times the pixel count are counted with one bincount and mapped through a
    table, in linear time: sorting the pixels, as np.unique does, costs 20x more on a chunk.
    """
    inst = np.asarray(inst)
    if not inst.size or inst.max() > 4 * inst.size + 1024:  # sparse huge ids: a table would not fit
        ids, inverse = np.unique(inst, return_inverse=True)
        return ids, inverse.reshape(inst.shape).astype(np.int32)
    present = np.bincount(inst.ravel()) > 0
    index = (np.cumsum(present) - 1).astype(np.int32)
    return np.flatnonzero(present), index[inst]


def relabel(inst: np.ndarray) -> np.ndarray:
    """int ``[H, W]`` ids -> int32 ``[H, W]`` with ids ``1..K`` in increasing order of the old id, 0 kept."""
    inst = np.asarray(inst)
    if inst.size and inst.min() < 0:
        raise ValueError("instance ids must be >= 0")
    ids, inverse = unique_ids(inst)
    # ids are sorted, so index 0 is the background when present; otherwise shift ids to start at 1
    return inverse if ids.size and ids[0] == 0 else inverse + 1


def _windows(inst: np.ndarray, pad: int):
    """Yield ``(id, window slices, mask of the id inside the window)``; windows = bbox padded by ``pad``."""
    h, w = inst.shape
    for idx, box in enumerate(ndi.find_objects(inst)):
        if box is None:
            continue
        ys, xs = box
        win = (
            slice(max(ys.start - pad, 0), min(ys.stop + pad, h)),
            slice(max(xs.start - pad, 0), min(xs.stop + pad, w)),
        )
        yield idx + 1, win, inst[win] == idx + 1


def _as_labels(inst: np.ndarray) -> np.ndarray:
    inst = np.asarray(inst)
    if inst.ndim != 2 or not np.issubdtype(inst.dtype, np.integer):
        raise ValueError(f"expected an integer [H, W] instance map, got {inst.dtype} {inst.shape}")
    if inst.size and inst.min() < 0:
        raise ValueError("instance ids must be >= 0")
    # sparse huge ids would make find_objects / bincount tables huge
    return relabel(inst) if inst.size and inst.max() > inst.size else inst.astype(np.int64, copy=False)


def instance_to_classes(inst: np.ndarray, band: int) -> np.ndarray:
    """int ``[H, W]`` instance ids -> uint8 ``[H, W]`` in {0 background, 1 interior, 2 contour band}."""
    inst = _as_labels(inst)
    r_in, r_out = band_radii(band)
    classes = np.zeros(inst.shape, np.uint8)
    # pad >= r_out reaches every dilated pixel; pad >= 1 puts the nearest non-instance pixel in the window
    for _, win, m in _windows(inst, max(r_out, 1)):
        # Chessboard erosion: a pixel is interior when its whole (2 r_in + 1)^2 square is inside,
        # so dilating the interior by the same square (post-processing) gives the object back
        # exactly, with no pixel outside it.
        inner = ndi.distance_transform_cdt(m, metric="chessboard") > r_in if not m.all() else m
        outer = ndi.distance_transform_edt(~m) <= r_out
        sub = classes[win]  # a view: writes go to `classes`
        sub[inner] = INTERIOR
        sub[m & ~inner] = CONTOUR
        # The outer half of the band only claims background: a neighbour's band must not eat
        # into another object's interior, or crowded small nuclei would lose their markers.
        sub[outer & ~m & (inst[win] == 0)] = CONTOUR
    return classes


def _two_nearest(inst: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``[H, W]`` distances to the nearest and second-nearest instance (inf beyond ``reach``)."""
    d1 = np.full(inst.shape, np.inf)
    d2 = np.full(inst.shape, np.inf)
    # every pixel within `reach` of instance j lies in its window, so d_j is exact there
    for _, win, m in _windows(inst, int(np.ceil(reach)) + 1):
        d = ndi.distance_transform_edt(~m)
        c1 = d1[win]
        d2[win] = np.minimum(d2[win], np.maximum(c1, d))
        d1[win] = np.minimum(c1, d)
    return d1, d2


def boundary_weight_map(
    inst: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    background_only: bool = False,
    class_balance: bool = False,
    tol: float = 1e-6,
) -> np.ndarray:
    """U-Net weight map: int ``[H, W]`` instance ids -> float32 ``[H, W]``.

    ``d1``/``d2`` are the Euclidean distances to the nearest / second-nearest instance (0 inside an
    instance for its own id), so the term is large in narrow gaps and, inside an object, near a touching
    neighbour. ``background_only=False`` applies it to every pixel as the U-Net formula does;
    ``True`` restricts it to background. ``class_balance`` sets ``w_c = N / (2 N_c)`` for the two classes
    background / foreground (mean of ``w_c`` over the image is 1); otherwise ``w_c = 1``. Distances are
    computed per instance inside its bounding box padded by ``sigma * sqrt(2 ln(w0 / tol))``, beyond which
    the term is below ``tol``; the result then differs from the full computation by at most ``tol``.
    """
    inst = _as_labels(inst)
    fg = inst > 0
    weights = np.ones(inst.shape) if not class_balance else _class_balance(fg)
    if w0 > 0 and tol < w0:
        d1, d2 = _two_nearest(inst, sigma * np.sqrt(2.0 * np.log(w0 / tol)))
        term = w0 * np.exp(-0.5 * ((d1 + d2) / sigma) ** 2)  # exp(-inf) = 0 with fewer than two instances
        weights += np.where(fg, 0.0, term) if background_only else term
    return weights.astype(np.float32)


def _class_balance(fg: np.ndarray) -> np.ndarray:
    """bool ``[H, W]`` -> float64 ``[H, W]`` with ``N / (2 N_c)`` per class (1 where a class is absent)."""
    n_fg = int(fg.sum())
    n_bg = fg.size - n_fg
    if n_fg == 0 or n_bg == 0:
        return np.ones(fg.shape)
    return np.where(fg, fg.size / (2.0 * n_fg), fg.size / (2.0 * n_bg))


def remove_small(inst: np.ndarray, min_size: int) -> np.ndarray:
    """Zero instances with fewer than ``min_size`` pixels and relabel ``1..K`` (in the order of the old ids).

    Counted and relabelled over the instances' pixels only: one bincount and one table lookup
    (it runs several times on every whole-slide chunk, mostly background).
    """
    inst = np.asarray(inst)
    if inst.size and inst.min() < 0:
        raise ValueError("instance ids must be >= 0")
    if inst.size and inst.max() > 4 * inst.size + 1024:  # sparse huge ids: compact them first
        inst = relabel(inst)
    where, ids = _object_pixels(inst)
    area = np.bincount(ids, minlength=1)
    return _relabel_kept(inst.shape, where, ids, (area >= min_size) & (area > 0))


def _object_pixels(inst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the pixels of ``inst`` (ids >= 0) that hold an object, and their ids."""
    where = np.flatnonzero(inst > 0)  # a boolean nonzero: several times faster than on the ids
    return where, inst.ravel()[where]


def _relabel_kept(shape: tuple[int, ...], where: np.ndarray, ids: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """int32 map of ``shape``: object pixels ``where`` (ids ``ids``) relabelled ``1..K`` in the order of
    their ids where ``keep[id]``, 0 elsewhere: one table lookup over the objects' pixels only."""
    keep[0] = True  # the background stays 0: the first kept entry
    table = np.where(keep, np.cumsum(keep, dtype=np.int64) - 1, 0).astype(np.int32)
    out = np.zeros(shape, np.int32)
    out.ravel()[where] = table[ids]
    return out


def chessboard_reach(markers: np.ndarray, reach: int) -> np.ndarray:
    """int32 chessboard distance of every pixel to the nearest ``markers > 0`` pixel, where it is
    at most ``reach``; ``reach + 1`` beyond (a few 3 x 3 dilations instead of a distance transform)."""
    grown = (np.asarray(markers) > 0).astype(np.uint8)
    distance = np.where(grown > 0, 0, reach + 1).astype(np.int32)
    square = np.ones((3, 3), np.uint8)
    for step in range(1, reach + 1):
        grown = cv2.dilate(grown, square)
        distance[(grown > 0) & (distance > step)] = step
    return distance


def _interior_contour(prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The interior and contour channels of ``[..., 3, H, W]`` probabilities in float64, as the
    post-processing compares them (the background channel is not used)."""
    return prob[..., 1, :, :].double(), prob[..., 2, :, :].double()


def watershed_cues(prob: torch.Tensor, threshold: float = 0.5) -> dict[str, torch.Tensor]:
    """The per-pixel part of :func:`postprocess_watershed`, on ``prob``'s device (a GPU's, in the
    slide engine): float ``[..., 3, H, W]`` probabilities -> ``[..., H, W]`` maps ``mask``
    (interior + contour > threshold) and ``marked`` (interior > threshold), bool, and ``rise``
    (contour - interior), float64 as the flooding orders pixels by it. Half the bytes of the
    probabilities, and what :func:`watershed_from_cues` needs of them."""
    interior, contour = _interior_contour(prob)
    return {"mask": interior + contour > threshold, "marked": interior > threshold, "rise": contour - interior}


def watershed_from_cues(
    mask: np.ndarray,
    marked: np.ndarray,
    rise: np.ndarray,
    min_size: int = 10,
    band: int | None = 3,
    min_marker_size: int = 3,
) -> np.ndarray:
    """The rest of :func:`postprocess_watershed`, from :func:`watershed_cues` ``[H, W]``: int32 ids."""
    if not np.asarray(marked).size:
        return np.zeros(np.shape(marked), np.int32)
    # 8-connected: the chessboard-eroded core of a 3-px-wide neck is a diagonal line
    markers = remove_small(label_components(marked), min_marker_size)
    if band is not None and band_radii(band)[0] == 1 and _floods_in_one_ring(mask, marked, rise):
        return remove_small(flood_one_ring(markers, mask, rise), min_size)  # nuclei (band 3)
    if band is None:
        distance = ndi.distance_transform_cdt(markers == 0, metric="chessboard")
    else:  # undo the targets' chessboard erosion; beyond r_in the mask is cut, so distances there do not matter
        r_in = band_radii(band)[0]
        distance = chessboard_reach(markers, r_in)
        mask = mask & (distance <= r_in)  # a new array: the cue may be a view of shared memory
    # Flood ring by ring away from the markers (contour - interior orders pixels within a ring):
    # each contour pixel joins the marker it touches, which restores touching objects exactly.
    elevation = 2.0 * distance + rise
    labels = watershed(elevation, markers, mask=mask, connectivity=2)
    return remove_small(labels, min_size)


def _floods_in_one_ring(mask: np.ndarray, marked: np.ndarray, rise: np.ndarray) -> bool:
    """Whether :func:`flood_one_ring` gives the watershed: the markers lie in the mask (so every
    ring pixel touches one that floods it) and the rises are those of probabilities, in [-1, 1]
    (so every marker pixel, at elevation rise < 1, comes before every ring pixel, at 2 + rise).
    Always so for :func:`watershed_cues`' maps."""
    return not (marked & ~mask).any() and (rise.size == 0 or (rise.min() >= -1.0 and rise.max() <= 1.0))


def flood_one_ring(markers: np.ndarray, mask: np.ndarray, rise: np.ndarray) -> np.ndarray:
    """The watershed of :func:`watershed_from_cues` where ``r_in`` is 1, without a priority queue.

    The mask is cut to the markers and the ring of pixels next to them (chessboard distance 1),
    whose elevations (2 + rise, at least 1) exceed the markers' (rise < 1 where the interior
    passes the threshold). A priority flood therefore takes every marker pixel before any ring
    pixel, and each ring pixel joins the marker pixel among its 8 neighbours that comes first:
    the one of lowest rise. This picks that neighbour directly, over the ring's pixels only
    (several times faster than skimage's flood on whole-slide chunks); where two neighbours of
    different markers have equal rises, skimage's heap leaves the order unspecified and this
    takes the first in scan order. ``markers`` int ``[H, W]`` (inside ``mask``), ``mask`` bool,
    ``rise`` float in [-1, 1] (:func:`_floods_in_one_ring`): int32 ids.
    """
    height, width = markers.shape
    objects = (markers > 0).astype(np.uint8)
    ring = (cv2.dilate(objects, np.ones((3, 3), np.uint8)) > objects) & mask
    where = np.flatnonzero(ring)
    rows, cols = np.divmod(where, width)
    padded = np.pad(markers.astype(np.int32, copy=False), 1).ravel()  # 0 beyond the border: no marker
    at = (rows + 1) * (width + 2) + cols + 1
    rises = np.ascontiguousarray(rise).ravel()
    lowest, chosen = np.full(where.size, np.inf), np.zeros(where.size, np.int32)
    for dy in (-1, 0, 1):  # neighbours in scan order: on equal rises the first one stays
        for dx in (-1, 0, 1):
            if dy or dx:
                label = padded[at + dy * (width + 2) + dx]
                near = np.flatnonzero(label)
                value = rises[where[near] + dy * width + dx]
                lower = value < lowest[near]
                picked = near[lower]
                lowest[picked], chosen[picked] = value[lower], label[picked]
    out = markers.astype(np.int32)
    out.ravel()[where] = chosen
    return out


def postprocess_watershed(
    prob: np.ndarray,
    min_size: int = 10,
    threshold: float = 0.5,
    band: int | None = 3,
    min_marker_size: int = 3,
) -> np.ndarray:
    """Nuclei: float ``[3, H, W]`` probabilities (background, interior, contour) -> int32 ``[H, W]`` ids.

    mask = (interior + contour) > threshold; markers = 8-connected components of interior > threshold with
    fewer than ``min_marker_size`` pixels dropped. Elevation = 2 x (chessboard distance to the markers) +
    contour - interior: the flooding advances ring by ring from the markers and, within a ring, from
    interior towards contour, so touching objects meet on their predicted contours. The mask includes the ``r_out``
    pixels that the targets add outside each object; with ``band`` given (the band of the targets) the
    mask is also cut to pixels within ``r_in`` of a marker, which undoes the erosion without the outer
    ring (``band=None``: the plain mask). Objects below ``min_size`` pixels are removed; ids ``1..K``.
    (:func:`watershed_cues`, then :func:`watershed_from_cues`.)
    """
    cues = watershed_cues(torch.as_tensor(np.asarray(prob)), threshold)
    cues = {name: value.numpy() for name, value in cues.items()}
    return watershed_from_cues(**cues, min_size=min_size, band=band, min_marker_size=min_marker_size)


def seed_cues(prob: torch.Tensor, threshold: float = 0.5) -> dict[str, torch.Tensor]:
    """The per-pixel part of :func:`postprocess_interior_minus_contour`, on ``prob``'s device:
    float ``[..., 3, H, W]`` -> bool ``[..., H, W]`` ``seeds``, interior - contour > threshold (in
    float64, as the CPU compares): one byte a pixel instead of twelve."""
    interior, contour = _interior_contour(prob)
    return {"seeds": interior - contour > threshold}


def grow_seeds(seeds: np.ndarray, band: int = 3, min_size: int = 30) -> np.ndarray:
    """The rest of :func:`postprocess_interior_minus_contour`, from :func:`seed_cues` ``[H, W]``: int32 ids."""
    grown = expand_chessboard(label_components(seeds), band_radii(band)[0])
    return remove_small(fill_holes(grown), min_size)


def postprocess_interior_minus_contour(
    prob: np.ndarray, threshold: float = 0.5, band: int = 3, min_size: int = 30
) -> np.ndarray:
    """Glands / lumina: float ``[3, H, W]`` probabilities -> int32 ``[H, W]`` ids ``1..K``.

    interior - contour > threshold -> 8-connected components -> each grown by ``r_in`` of ``band``
    (the chessboard erosion of the targets) with :func:`expand_chessboard`, which gives every pixel to
    the nearest component so neighbours never merge -> fill holes -> drop objects below ``min_size``.
    (:func:`seed_cues`, then :func:`grow_seeds`.)
    """
    seeds = seed_cues(torch.as_tensor(np.asarray(prob)), threshold)["seeds"]
    return grow_seeds(seeds.numpy(), band, min_size)


def drop_outside(inst: np.ndarray, container: np.ndarray, min_overlap: float = 0.5) -> np.ndarray:
    """Keep instances with at least ``min_overlap`` of their area on ``container > 0``; relabel ``1..K``.

    Used to drop lumina outside glands. ``inst`` int ``[H, W]``, ``container`` ``[H, W]`` (ids or mask).
    Counted over the instances' pixels only (it runs on every whole-slide chunk, mostly background).
    """
    inst = _as_labels(inst)
    where, ids = _object_pixels(inst)
    area = np.bincount(ids, minlength=1)
    inside = np.bincount(ids[np.asarray(container).ravel()[where] > 0], minlength=area.size)
    return _relabel_kept(inst.shape, where, ids, (inside >= min_overlap * area) & (area > 0))


def majority_type(inst: np.ndarray, type_map: np.ndarray, num_classes: int | None = None) -> dict[int, int]:
    """int ``[H, W]`` ids and int ``[H, W]`` types -> ``{instance id: type}`` for every id in ``inst``.

    The type is the most frequent *nonzero* type under the instance; ties go to the smallest type id;
    0 when the instance covers only type 0. ``num_classes`` (types ``0..num_classes-1``) is checked.
    """
    inst = _as_labels(inst)
    types = np.asarray(type_map).astype(np.int64)
    if types.shape != inst.shape:
        raise ValueError(f"shape mismatch: inst {inst.shape} vs type_map {types.shape}")
    n_types = int(types.max(initial=0)) + 1 if num_classes is None else num_classes
    if types.size and (types.min() < 0 or types.max() >= n_types):
        raise ValueError(f"types must lie in [0, {n_types})")
    ids, compact = unique_ids(inst)
    counts = np.bincount(compact.ravel().astype(np.int64) * n_types + types.ravel(), minlength=ids.size * n_types)
    best = majority_of(counts.reshape(ids.size, n_types))
    return {int(i): int(t) for i, t in zip(ids, best) if i != 0}


def majority_of(counts: np.ndarray) -> np.ndarray:
    """int64 ``[K]``: per row of ``counts`` (the types of an instance's pixels counted, ``[K, T]``), the
    most frequent nonzero type, the smallest on ties, 0 where the row counts none (type 0, the
    background, never wins: as HoVer-Net types its nuclei)."""
    if counts.shape[1] < 2:
        return np.zeros(len(counts), np.int64)
    typed = counts[:, 1:]
    best = typed.argmax(axis=1) + 1  # argmax returns the first maximum: the smallest type id on ties
    best[typed.max(axis=1) == 0] = 0
    return best.astype(np.int64)


def majority_type_map(inst: np.ndarray, type_map: np.ndarray, num_classes: int) -> np.ndarray:
    """``[H, W]`` of ``type_map``'s integer dtype (int32 otherwise): every instance painted with its
    :func:`majority_type`, 0 elsewhere.

    ``type_map_from_instances(inst, majority_type(inst, type_map, num_classes))`` counted over
    the instances' pixels only, without the per-instance dict: it runs on every whole-slide chunk
    (in the type map's dtype, so that the refined map needs no conversion).
    """
    inst = np.asarray(inst)
    types = np.asarray(type_map)
    if types.shape != inst.shape:
        raise ValueError(f"shape mismatch: inst {inst.shape} vs type_map {types.shape}")
    if inst.size and (inst.min() < 0 or inst.max() > inst.size):  # negative or sparse huge ids
        return type_map_from_instances(inst, majority_type(inst, types, num_classes))
    inside, ids = _object_pixels(inst)
    ids, voted = ids.astype(np.int64), types.ravel()[inside].astype(np.int64)
    if voted.size and (voted.min() < 0 or voted.max() >= num_classes):
        raise ValueError(f"types must lie in [0, {num_classes})")
    counts = np.bincount(ids * num_classes + voted, minlength=(int(inst.max(initial=0)) + 1) * num_classes)
    best = majority_of(counts.reshape(-1, num_classes))
    painted = np.zeros(inst.size, types.dtype if np.issubdtype(types.dtype, np.integer) else np.int32)
    painted[inside] = best[ids]
    return painted.reshape(inst.shape)


def type_map_from_instances(inst: np.ndarray, types: dict[int, int]) -> np.ndarray:
    """int ``[H, W]`` ids and ``{id: type}`` -> int32 ``[H, W]`` type map (0 on background and unknown ids)."""
    inst = _as_labels(inst)
    ids, compact = unique_ids(inst)
    lut = np.array([types.get(int(i), 0) if i != 0 else 0 for i in ids], dtype=np.int32)
    return lut[compact]
