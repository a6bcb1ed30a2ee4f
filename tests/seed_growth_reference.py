"""The definitions that ``vismtl.tasks.seed_growth`` gives in windows: scipy's transforms on the whole
image and its hole filling object by object (the tests' oracle and ``benchmarks/wsi_finishing.py``'s baseline)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from vismtl.tasks.instance_targets import band_radii, label_components, remove_small


def expand_whole_image(labels: np.ndarray, distance: int) -> np.ndarray:
    """The definition: scipy's chessboard distance transform with indices over the whole image."""
    reach, (rows, cols) = ndi.distance_transform_cdt(labels == 0, metric="chessboard", return_indices=True)
    return np.where((labels == 0) & (reach <= distance), labels[rows, cols], labels)


def fill_holes_one_by_one(inst: np.ndarray) -> np.ndarray:
    """The definition: scipy's ``binary_fill_holes`` of each object in its box grown by one, in id order."""
    out = inst.copy()
    for idx, box in enumerate(ndi.find_objects(inst), 1):
        if box is not None:
            window = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
            sub = out[window]
            sub[ndi.binary_fill_holes(inst[window] == idx) & (sub == 0)] = idx
    return out


def grow_seeds_whole_image(seeds: np.ndarray, band: int, min_size: int) -> np.ndarray:
    """``vismtl.tasks.instance_targets.grow_seeds`` by the definitions."""
    grown = expand_whole_image(label_components(seeds), band_radii(band)[0])
    return remove_small(fill_holes_one_by_one(grown), min_size)
