"""The nuclei's decisions (band 3) made with PyTorch where the probabilities are: on a GPU, beside
the model, instead of in the CPU's finishing processes, which bound the slide engine there.

:func:`flood_on_device` gives what :func:`~vismtl.tasks.instance_targets.watershed_from_cues`
gives on the CPU, ids and numbering included (``tests/test_flood_on_device.py``):

- markers: 8-connected components of ``marked``, numbered in the order of their first pixel in
  raster order (scipy's), found by propagating each pixel's smallest index through its component
  (with pointer jumping), then those under ``min_marker_size`` pixels dropped and the rest
  renumbered in order;
- the one ring of mask pixels next to the markers joins, per pixel, the neighbouring marker pixel
  of lowest rise, the first in scan order on equal rises (:func:`~vismtl.tasks.instance_targets.flood_one_ring`);
- objects under ``min_size`` pixels dropped, the rest renumbered in order.

It also sends the finishing processes 4 bytes a pixel (the ids) instead of 10 (the cues).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]  # scan order


def flood_on_device(
    mask: torch.Tensor, marked: torch.Tensor, rise: torch.Tensor, min_size: int = 10, min_marker_size: int = 3
) -> torch.Tensor | None:
    """int32 ids ``[H, W]`` of :func:`~vismtl.tasks.instance_targets.watershed_from_cues` with band 3,
    on the maps' device; None where the flood is not one ring (markers outside the mask, rises
    outside [-1, 1]: never so for probabilities), which the CPU then decides."""
    if bool((marked & ~mask).any()) or (rise.numel() and not bool(rise.abs().max() <= 1.0)):
        return None
    markers = remove_small_on_device(components_on_device(marked), min_marker_size)
    return remove_small_on_device(flood_one_ring_on_device(markers, mask, rise), min_size)


def components_on_device(mask: torch.Tensor) -> torch.Tensor:
    """int32 ids ``1..K`` of the 8-connected components of a bool ``[H, W]`` mask, numbered as scipy
    numbers them (by their first pixel in raster order), 0 elsewhere."""
    height, width = mask.shape
    outside = float(height * width + 1)
    # float64: exact for every pixel index; max_pool2d has no integer kernel
    index = torch.arange(1, height * width + 1, device=mask.device, dtype=torch.float64).view(height, width)
    labels = torch.where(mask, index, outside)
    while True:
        smallest = -F.max_pool2d(-labels[None, None], 3, stride=1, padding=1)[0, 0]  # over the 3 x 3 neighbours
        grown = torch.where(mask, torch.minimum(labels, smallest), outside)
        # pointer jumping: a label is a pixel of the same component, whose own label is no larger
        jumped = grown.flatten()[(grown.flatten() - 1).clamp(max=height * width - 1).long()].view(height, width)
        grown = torch.where(mask, torch.minimum(grown, jumped), outside)
        if torch.equal(grown, labels):
            break
        labels = grown
    firsts = torch.unique(labels[mask])  # sorted: each component's first pixel, in raster order
    return torch.where(mask, torch.searchsorted(firsts, labels) + 1, 0).to(torch.int32)


def remove_small_on_device(labels: torch.Tensor, min_size: int) -> torch.Tensor:
    """:func:`~vismtl.tasks.instance_targets.remove_small` of int ids ``1..K`` (0 background)."""
    area = torch.bincount(labels.flatten().long(), minlength=1)
    keep = (area >= min_size) & (area > 0)
    keep[0] = True  # the background stays 0: the first kept entry
    table = torch.where(keep, torch.cumsum(keep, 0) - 1, 0).to(torch.int32)
    return table[labels.long()]


def flood_one_ring_on_device(markers: torch.Tensor, mask: torch.Tensor, rise: torch.Tensor) -> torch.Tensor:
    """:func:`~vismtl.tasks.instance_targets.flood_one_ring`: each mask pixel next to a marker takes the
    neighbouring marker pixel of lowest rise (the first in scan order on equal rises)."""
    height, width = markers.shape
    objects = markers > 0
    grown = F.max_pool2d(objects[None, None].to(torch.float32), 3, stride=1, padding=1)[0, 0] > 0
    ring = grown & ~objects & mask
    padded_markers, padded_rise = F.pad(markers, (1, 1, 1, 1)), F.pad(rise, (1, 1, 1, 1))  # 0: no marker beyond
    lowest = torch.full_like(rise, float("inf"))
    chosen = torch.zeros_like(markers)
    for dy, dx in _NEIGHBOURS:
        label = padded_markers[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        value = padded_rise[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        lower = ring & (label > 0) & (value < lowest)  # strictly: on equal rises the first one stays
        lowest = torch.where(lower, value, lowest)
        chosen = torch.where(lower, label, chosen)
    return torch.where(ring, chosen, markers)
