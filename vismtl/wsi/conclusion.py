"""A slide's end, once its last chunk is written: its GeoJSON put together, its pictures, patch-class
maps and summary.

:func:`conclude_slide` runs where the engine finishes chunks: in a finishing process when there
are some (a GPU's default), so that its Python (the objects crossing chunk borders, the GeoJSON,
zarr's reads for the thumbnail) does not take turns at the GIL with the model's thread, which
launches the next slide's kernels meanwhile (``benchmarks/wsi_prepare_conclude.py``); else in the
calling thread. What it takes and returns a process gets pickled; what it logs in a process is
logged by the engine.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vismtl.tasks import Task
from vismtl.wsi.geojson import ChunkPart, chunk_part
from vismtl.wsi.inputs import SlideInput
from vismtl.wsi.instances import assemble
from vismtl.wsi.outputs import merge_summaries
from vismtl.wsi.pieces import ObjectPiece
from vismtl.wsi.preparation import Prepared
from vismtl.wsi.settings import WSISettings
from vismtl.wsi.stitch import type_task_of

log = logging.getLogger("vismtl")


@dataclass(frozen=True)
class SlideEnd:
    """What concluding a slide needs of its run."""

    input: SlideInput
    state: Prepared  # its outputs, grid, picture, mask and plan
    settings: WSISettings
    timings: dict[str, float]  # prepare_s, tiles_s and the model thread's seconds (model_s, ...)


def conclude_slide(tasks: Mapping[str, Task], end: SlideEnd) -> dict[str, Any]:
    """Write ``end``'s slide's GeoJSON, pictures, patch-class maps and summary (last: it marks the
    slide complete). Returns its manifest entry."""
    started = time.perf_counter()
    state, outputs = end.state, end.state.outputs
    entries = outputs.journal.entries()
    written, assembled = outputs.write_instances(functools.partial(_assembled, tasks, end))
    dense = {n: t for n, t in tasks.items() if t.dense}
    instance = [n for n, t in dense.items() if t.kind == "instance"]
    labels = next((n for n, t in dense.items() if t.kind in ("semseg", "type")), None)
    outputs.write_pictures(state.picture, state.mask, instance, labels)
    patch = [n for n, t in tasks.items() if not t.dense]
    tiles = {n: [row for e in entries.values() for row in e.get("patch_tiles", {}).get(n, [])] for n in patch}
    names = {n: tasks[n].class_names or [str(c) for c in range(tasks[n].num_outputs)] for n in patch}
    outputs.write_patch_maps(tiles, end.settings.step, names, state.picture)
    summary = merge_summaries(entries, assembled)
    # wall_s: the slide's phases (prepare_s: opening, tissue mask, plan; tiles_s: the read -> model
    # -> write pipeline, up to its last chunk's write; conclude_s: GeoJSON, pictures); within
    # tiles_s the model's thread computed (model_s), waited for tiles (input_wait_s) and for the
    # writers (output_wait_s), and drain_s went to the chunks still being finished after its last
    # batch; between its first batch and its last the model was idle gap_s (on a GPU, the
    # device's), gap_late_s of it because the model's thread came late (ModelClock.gaps);
    # finish_s: the chunks' post-processing, added up over the threads or processes that ran it
    timings = {k: round(v, 3) for k, v in end.timings.items()}
    conclude_s = time.perf_counter() - started
    wall_s = end.timings["prepare_s"] + end.timings["tiles_s"] + conclude_s
    summary.update(
        slide=str(end.input.path),
        mpp_level0=state.mpp,
        output_grid=[state.layout.height, state.layout.width],
        chunks={"total": len(state.layout.chunks()), "with_tissue": len(entries), "resumed": state.resumed},
        tissue_fraction=float(state.mask.mean()),
        instances_written=written,
        # this run's tiles taken from the cache instead of computed again, and the cache's peak
        tiles_shared=state.plan.shared,
        tile_cache_mb=round(state.plan.peak_bytes / 2**20, 1),
        tissue_classes=_proportions(tasks, summary["patch_votes"]),
        timings={"wall_s": round(wall_s, 3)}
        | timings
        | {"conclude_s": round(conclude_s, 3), "finish_s": summary.pop("finish_s")},
        settings=end.settings.fingerprint(),
    )
    summary["unreadable_tiles"] = unreadable = outputs.unreadable_tiles()
    if unreadable:
        log.warning(
            "%s: %d tiles could not be read (a damaged slide file) and were left white: %s/unreadable.jsonl",
            end.input.name,
            unreadable,
            outputs.folder,
        )
    if summary["cut_objects"]:
        log.info(
            "%s: %d objects were larger than the chunk margin; each was put together from its chunks' pieces "
            "(a larger wsi.margin decides their far pixels with more context)",
            end.input.name,
            summary["cut_objects"],
        )
    outputs.write_summary(summary)
    entry = {"status": "done", "error": None, "tiles": summary["tiles"], "resumed_chunks": state.resumed}
    return entry | ({"unreadable_tiles": unreadable} if unreadable else {})


def _assembled(tasks: Mapping[str, Task], end: SlideEnd, task: str, pieces: list[ObjectPiece]) -> ChunkPart:
    """The objects of a slide's pieces of ``task`` (objects crossing chunk borders), as a part."""
    type_name = type_task_of(task, tasks)
    class_names = (tasks[type_name].class_names or ()) if type_name else ()
    state = end.state
    return chunk_part(assemble(pieces, state.layout.chunk, 1.0 / state.scale, state.mpp, task, class_names))


def _proportions(tasks: Mapping[str, Task], votes: Mapping[str, list[int]]) -> dict[str, dict[str, float]]:
    """Per patch-class task, the share of the slide's tiles voting for each class."""
    out = {}
    for name, hist in votes.items():
        total = max(sum(hist), 1)
        names = tasks[name].class_names
        out[name] = {names[i]: count / total for i, count in enumerate(hist)}
    return out
