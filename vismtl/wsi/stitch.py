"""Tiles of model outputs -> one chunk: blending, then per-task rasters and instances.

A :class:`ChunkCanvas` accumulates the activated outputs (probabilities, ...) of the tiles
that cover a chunk's region with the blending op; :func:`finalize_chunk` turns the blended
maps into what is written: uint8 rasters of the chunk's core for every dense task, the
instances each instance task owns, and per-chunk statistics for the summary. It does so in
two steps: :func:`chunk_maps`, per pixel and where the canvas is (a GPU's, beside the model),
makes the small :class:`ChunkMaps`; :func:`finish_maps`, on the CPU (a writer thread or a
finishing process), decides the objects and makes the rasters and the instances' GeoJSON.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vismtl.ops.tile_blend import blend_tiles, blend_window, normalise_
from vismtl.ops.tile_blend.reference import clipped_tiles
from vismtl.tasks import Task
from vismtl.wsi.geojson import ChunkPart, chunk_part
from vismtl.wsi.instances import extract_chunk
from vismtl.wsi.tiling import Box, nonzero_box


class ChunkCanvas:
    """Weighted sums of the tiles' activated outputs over one chunk's region.

    Every dense task's channels are stacked in one canvas, so a batch of tiles is blended
    with one call of the blending op.

    Args:
        region: (y0, x0, y1, x1) of the region on the output grid.
        channels: ``{task: channels}`` of the dense tasks.
        tile: kept tile side; ``window`` (``"ones"`` | ``"hann"``) weighs its pixels.
        device: where to accumulate (the model's device).
        recycled: ``(sums, weight_sum)`` of a finished canvas to reuse (``weight_sum`` None
            when that canvas copied its tiles).
        disjoint: whether tiles never overlap (stride >= tile).
    """

    def __init__(
        self,
        region: Box,
        channels: Mapping[str, int],
        tile: int,
        window: str,
        device,
        recycled: tuple[torch.Tensor, torch.Tensor | None] | None = None,
        disjoint: bool = False,
    ) -> None:
        self.region = region
        height, width = region[2] - region[0], region[3] - region[1]
        bounds = np.cumsum([0, *channels.values()])
        self.slices = {t: slice(int(a), int(b)) for t, a, b in zip(channels, bounds[:-1], bounds[1:])}
        # Disjoint tiles under a flat window: each covered pixel gets one tile at weight 1 and
        # every other pixel stays 0, so the tiles are copied in and there are no weights.
        self.copy = disjoint and window == "ones"
        shape = (int(bounds[-1]), height, width)
        fits = recycled is not None and recycled[0].shape == shape and recycled[0].device == torch.device(device)
        # a finished chunk's buffers: zeroing them costs a fraction of fresh pages
        sums, weights = recycled if fits else (None, None)
        self.sums = sums.zero_() if sums is not None else torch.zeros(shape, device=device)
        self.weight_sum: torch.Tensor | None = None
        if not self.copy:
            self.weight_sum = weights.zero_() if weights is not None else torch.zeros((height, width), device=device)
        self.window = _window(tile, window, torch.device(device))
        # task -> (corners [N, 2], in the core [N], classes [N] on the device) per batch: its votes
        # and the map's cells (:func:`patch_classes`)
        self.patch_tiles: dict[str, list[tuple[np.ndarray, np.ndarray, torch.Tensor]]] = {}
        self.tiles = 0

    def add(self, outputs: Mapping[str, torch.Tensor], positions: torch.Tensor) -> torch.Tensor | None:
        """outputs ``{task: [N, C, tile, tile]}`` of N tiles whose kept regions start at ``positions`` ``[N, 2]``.

        Returns the tiles as added: ``[N, C, tile, tile]`` float32, every task's channels stacked
        in the canvas's order (what the tile cache keeps); None without dense tasks.
        """
        self.tiles += int(positions.shape[0])
        if not self.slices:
            return None
        # one copy of the batch, then one call per tile (CPU) or per batch (GPU) for every task
        tiles = torch.cat([outputs[t].float() for t in self.slices], dim=1)
        offsets = positions - torch.tensor(self.region[:2], device=positions.device)
        if self.copy and not self.sums.is_cuda:  # slices from offsets on the CPU: contiguous copies
            _copy_tiles(tiles, offsets.cpu(), self.sums)
        else:
            # On a GPU disjoint tiles are added into the zeroed canvas without weights, which copies
            # them exactly, with one launch for the batch instead of a copy per tile: the engine's
            # process launches everything from one GIL.
            blend_tiles(tiles, _to_device(offsets, self.sums.device), self.window, self.sums, self.weight_sum)
        return tiles

    def result(self) -> dict[str, torch.Tensor]:
        """``{task: [1, C, H, W]}`` blended (0 where no tile contributed); call once: blends in place."""
        blended = self.sums if self.copy else normalise_(self.sums, self.weight_sum)
        return {t: blended[s][None] for t, s in self.slices.items()}


def _to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """A small host tensor on ``device``. To a GPU through pinned memory: a copy from pageable
    memory may wait for everything queued on the stream (the model's batch just launched), so
    the model's thread would stop feeding the GPU until that batch is done."""
    if torch.device(device).type == "cuda" and not tensor.is_cuda:
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _copy_tiles(tiles: torch.Tensor, offsets: torch.Tensor, canvas: torch.Tensor) -> None:
    """Each tile ``[C, h, w]`` into ``canvas`` at its offset (clipped to the canvas)."""
    for k, inside, part in clipped_tiles(offsets, tiles.shape[2:], canvas.shape[1:]):
        canvas[(slice(None), *inside)] = tiles[(k, slice(None), *part)]


@functools.lru_cache(maxsize=8)
def _window(tile: int, kind: str, device: torch.device) -> torch.Tensor:
    return blend_window(tile, tile, kind, device=device)


@dataclass
class ChunkResult:
    rasters: dict[str, np.ndarray]  # task -> core raster (uint8 / uint16), [h, w] or [h, w, 3]
    parts: dict[str, ChunkPart] = field(default_factory=dict)  # instance task -> its objects and pieces
    stats: dict[str, Any] = field(default_factory=dict)


def instance_raster(activated: torch.Tensor) -> torch.Tensor:
    """What is stored for an instance task: uint8 ``[H, W]`` object probability of its ``[1, 3, H, W]``
    probabilities, where they are. Interior + contour, not 1 - background: pixels no tile covered
    are 0 in every channel."""
    return (activated[0, 1:].sum(dim=0).clamp(0, 1) * 255).round().to(torch.uint8)


def raster_spec(task: Task) -> tuple[np.dtype, tuple[int, ...]]:
    """``(dtype, trailing shape)`` of the raster stored for ``task`` (from a 2 x 2 probe), so that
    the arrays exist before any chunk is written."""
    probe = torch.zeros(1, task.num_outputs, 2, 2)
    sample = instance_raster(probe).numpy() if task.kind == "instance" else task.export(task.decide(probe)[0])
    return sample.dtype, tuple(sample.shape[2:])


@dataclass(frozen=True)
class ChunkJob:
    """Where a chunk lies, for its finishing: the blended region's and the core's boxes on the
    output grid, level-0 pixels per output pixel and level-0 microns per pixel."""

    region: Box
    core: Box
    scale: float
    mpp: float | None

    @property
    def crop(self) -> tuple[slice, slice]:
        """The core within the region."""
        (y0, x0), core = self.region[:2], self.core
        return slice(core[0] - y0, core[2] - y0), slice(core[1] - x0, core[3] - x0)


@dataclass
class ChunkMaps:
    """What finishing needs of a blended chunk: made where the canvas is (on a GPU, the per-pixel
    work is done there) and a few bytes a pixel, since it is copied to the host and into the
    finishing processes (the histology tasks' maps of a chunk full of tissue: about 22 MB instead
    of 48, ``benchmarks/wsi_finishing.py``).

    Args:
        cues: instance task -> its :meth:`~vismtl.tasks.instance.InstanceTask.pixel_cues` on ``box``,
            ``[1, h, w]`` each (the nuclei's decided ids with ``wsi.decide_on_gpu``).
        rasters: instance task -> its stored raster of the core, uint8 (:func:`instance_raster`).
        decided: every other dense task -> its decisions on the region ``[1, ...]`` (argmax and the like).
        ran: bool ``[1, h, w]``, the pixels of ``box`` some tile ran on.
        box: ``(y0, x0, y1, x1)`` in the region: the pixels some tile ran on, grown by the instance
            tasks' largest reach (a chunk at the edge of the tissue is mostly glass, where nothing
            starts an object); None where no tile ran, or without instance tasks.
    """

    cues: dict[str, dict[str, torch.Tensor]]
    rasters: dict[str, torch.Tensor]
    decided: dict[str, torch.Tensor]
    ran: torch.Tensor | None = None
    box: Box | None = None

    def flat(self) -> dict[tuple[str, ...], torch.Tensor]:
        """Every map under a key of plain strings (for shared memory): the inverse of :meth:`from_flat`."""
        flat = {("cues", task, name): value for task, cues in self.cues.items() for name, value in cues.items()}
        flat.update({("rasters", task): value for task, value in self.rasters.items()})
        flat.update({("decided", task): value for task, value in self.decided.items()})
        if self.box is not None:
            flat[("ran",)], flat[("box",)] = self.ran, torch.tensor(self.box)
        return flat

    @classmethod
    def from_flat(cls, flat: Mapping[tuple[str, ...], torch.Tensor]) -> ChunkMaps:
        maps = cls({}, {}, {})
        for key, value in flat.items():
            if key[0] == "cues":
                maps.cues.setdefault(key[1], {})[key[2]] = value
            elif key[0] in ("rasters", "decided"):
                getattr(maps, key[0])[key[1]] = value
        if ("box",) in flat:
            maps.ran, maps.box = flat[("ran",)], tuple(int(v) for v in flat[("box",)].tolist())
        return maps

    def cpu(self) -> ChunkMaps:
        return ChunkMaps.from_flat({key: value.cpu() for key, value in self.flat().items()})


def chunk_maps(
    activated: Mapping[str, torch.Tensor], tasks: Mapping[str, Task], job: ChunkJob, decide: bool = False
) -> ChunkMaps:
    """What finishing needs of a blended chunk (:class:`ChunkMaps`), where ``activated`` (the
    canvas's :meth:`~ChunkCanvas.result`) is; ``decide``: the nuclei decided there too
    (``wsi.decide_on_gpu``)."""
    instance = {n: values for n, values in activated.items() if tasks[n].kind == "instance"}
    maps = ChunkMaps({}, {n: instance_raster(values[(..., *job.crop)]) for n, values in instance.items()}, {})
    maps.decided = {n: tasks[n].decide(values) for n, values in activated.items() if n not in instance}
    if not instance:
        return maps
    ran = next(iter(instance.values())).sum(dim=1) > 0  # the same for every task: each tile covers all of them
    reach = max(getattr(tasks[n], "reach", max(ran.shape[1:])) for n in instance)  # unsaid: the whole region
    found = nonzero_box(ran[0].cpu().numpy(), reach)
    if found is not None:
        where = (..., *found)
        maps.cues = {n: tasks[n].pixel_cues(values[where], decide) for n, values in instance.items()}
        maps.ran, maps.box = ran[where], (found[0].start, found[1].start, found[0].stop, found[1].stop)
    return maps


def finish_maps(maps: ChunkMaps, tasks: Mapping[str, Task], job: ChunkJob) -> tuple[dict, dict[str, ChunkPart]]:
    """Decide the instance tasks, refine every task, crop the core: ``(rasters, parts)``.

    ``maps`` from :func:`chunk_maps`, on the CPU. Runs in a writer thread or in a worker
    process (:mod:`vismtl.wsi.finishing`); the result is small and plain.
    """
    y0, x0, y1, x1 = job.region
    decided = decide_instances(maps, tasks, (y1 - y0, x1 - x0))
    decided.update(maps.decided)
    per_pixel = decided  # the type tasks' per pixel, which the objects' types are voted from
    decided = {n: tasks[n].refine(value, per_pixel) for n, value in decided.items()}
    # every export is per pixel: the core's alone is computed
    rasters = {n: value.numpy() for n, value in maps.rasters.items()}
    rasters.update({n: tasks[n].export(decided[n][(..., *job.crop)][0]) for n in maps.decided})
    rows, cols = job.crop
    local_core = (rows.start, cols.start, rows.stop, cols.stop)
    parts = {}
    for name in maps.rasters:  # the instance tasks
        labels = decided[name][0].numpy()
        type_map, class_names = _instance_types(name, tasks, per_pixel)
        found = extract_chunk(labels, local_core, (x0, y0), job.scale, job.mpp, name, type_map, class_names)
        parts[name] = chunk_part(found)
    return rasters, parts


def decide_instances(maps: ChunkMaps, tasks: Mapping[str, Task], shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Every instance task's labels ``[1, *shape]`` over the region, from its cues on ``maps.box``,
    cut to the pixels some tile ran on: growth steps (glands grow their seeds by the band) must not
    carry an object into a chunk that is not computed, which would then own it and drop it.

    Deciding on the box gives the labels the whole region would: nothing outside it starts an
    object, and every step of the decision looks no further than the task's reach.
    """
    decided = {}
    for name in maps.rasters:
        labels = decided[name] = torch.zeros((1, *shape), dtype=torch.int32)
        if maps.box is not None:
            y0, x0, y1, x1 = maps.box
            found = tasks[name].decide_from_cues(maps.cues[name])
            labels[:, y0:y1, x0:x1] = torch.where(maps.ran, found, torch.zeros((), dtype=found.dtype))
    return decided


def finalize_chunk(
    canvas: ChunkCanvas, job: ChunkJob, tasks: Mapping[str, Task], finish, files=None, decide: bool = False
) -> ChunkResult:
    """The blended chunk -> rasters of its core, the instances it owns and its statistics.

    ``finish(maps, job, files) -> (rasters, parts, seconds)``: :func:`finish_maps` here or in
    worker processes, timed (a :class:`vismtl.wsi.finishing.ChunkFinisher`); a worker process
    writes the outputs to ``files`` itself and returns none of them.
    """
    rasters, parts, seconds = finish(chunk_maps(canvas.result(), tasks, job, decide), job, files)
    result = ChunkResult(rasters, parts)
    result.stats = {**_stats(result, canvas, tasks), "finish_s": round(seconds, 4)}
    return result


def _instance_types(name: str, tasks: Mapping[str, Task], decided) -> tuple[np.ndarray | None, tuple]:
    """The per-pixel types of the type task that votes over this instance task, if any, and its
    class names: :func:`extract_chunk` counts each object's (its type and the fraction of its
    pixels that have it), as the type task's refine does for its raster."""
    type_name = type_task_of(name, tasks)
    if type_name is None or type_name not in decided:
        return None, ()
    return decided[type_name][0].numpy(), tasks[type_name].class_names or ()


def type_task_of(name: str, tasks: Mapping[str, Task]) -> str | None:
    """The type task that votes over instance task ``name``'s objects, if any."""
    return next((n for n, t in tasks.items() if t.kind == "type" and getattr(t, "instances_from", None) == name), None)


def patch_classes(
    canvas: ChunkCanvas, tasks: Mapping[str, Task]
) -> tuple[dict[str, list[int]], dict[str, list[list[int]]]]:
    """Per patch-class task, the votes of the tiles whose corner lies in the chunk's core (each
    counted once) and those tiles' ``[y, x, class]``: one copy from the device per task."""
    votes, tiles = {}, {}
    for task, batches in canvas.patch_tiles.items():
        corners, inside, classes = zip(*batches)
        inside = np.concatenate(inside)
        picked = torch.cat(classes).cpu().numpy()[inside]
        votes[task] = np.bincount(picked, minlength=tasks[task].num_outputs).tolist()
        tiles[task] = np.column_stack([np.concatenate(corners)[inside], picked]).tolist()
    return votes, tiles


def _stats(result: ChunkResult, canvas: ChunkCanvas, tasks: Mapping[str, Task]) -> dict[str, Any]:
    """Counts and areas per task and class, patch-class votes and each tile's patch class: what the
    summary adds up and the patch-class map is drawn from."""
    counts = {task: part.counts for task, part in result.parts.items()}
    areas = {task: part.area_um2 for task, part in result.parts.items()}
    votes, tiles = patch_classes(canvas, tasks)
    return {"tiles": canvas.tiles, "counts": counts, "area_um2": areas, "patch_votes": votes, "patch_tiles": tiles}
