"""Chunk finishing (post-processing) of the whole-slide engine, alone: what one core absorbs, and
how it scales over finishing processes.

    python benchmarks/wsi_finishing.py [--chunks 6] [--histology-checkpoint CKPT] [--repeats 3]

The histology quickstart model (configs/cerberus/quickstart_tissue.py; random weights unless a
checkpoint is given) runs on the first chunks of tissue of the generated 20,000 x 20,000 slide of
``wsi_throughput.py`` (1024 px chunks with 64 px margins, 256 px tiles with 32 px of context), and
its blended maps are kept. Then, timed on those maps:

- the chunks' pixel cues, rasters and decisions (``chunk_maps``: the per-pixel part of finishing,
  which the engine does where the canvas is, on a GPU there; printed: their size against the
  probabilities the finishing processes were sent until 016f312);
- finishing every chunk in this thread (``finish_maps``: watershed and components of the instance
  tasks, type votes, outlines, JSON): tiles per second of one core; from the cues, as the
  finishing processes now do, and from the probabilities (cues made, then finishing) as they
  did until 016f312;
- the outlines of every nucleus: the former per-object OpenCV tracer (``tests/outline_reference.py``)
  against ``label_outlines`` (all objects at once);
- the glands' and lumina's seeds grown into objects by the definitions (scipy's transform on the
  whole image, holes filled object by object: ``tests/seed_growth_reference.py``) against
  ``grow_seeds`` (in windows around the seeds, ``vismtl/tasks/seed_growth.py``);
- the nuclei the chunks keep (``extract_chunk``: outlines, measurements, pieces, ids), untyped and
  typed by the votes of their pixels' types (each one's type and class pixel share);
- the GeoJSON text of the nuclei the chunks keep: an :class:`Instance` and ``feature_text`` per
  object (as until 6e42ffa) against ``features_text`` (all from the columns at once);
- the copy of the chunks' maps into shared memory for the finishing processes (``pack``): into new
  blocks, as before 2026-11-27, and into blocks used before, as ``ChunkFinisher`` now does (a new
  block's pages are faulted in by the copy); and the probabilities into blocks used before,
  as until 016f312;
- ``ChunkFinisher`` with 1, 2, ... worker processes (as many as the machine's cores), fed by as
  many threads: how the engine's finishing scales where cores are free (GPU machines).

It also counts the cyclic garbage collector's passes while this thread finishes the chunks
(objects left alive per chunk make it run, and a full pass walks every object of the process).

Before timing, the processes' results are checked equal to this thread's, the outlines' areas
equal to the per-object tracer's, the grown seeds to the definitions' and the texts to each other.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import os
import pstats
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from shapely.geometry import Polygon

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harness import Row, measure, print_table, quickstart_histology  # noqa: E402
from outline_reference import reference_polygon  # noqa: E402
from seed_growth_reference import grow_seeds_whole_image  # noqa: E402
from vismtl.tasks.instance_targets import grow_seeds  # noqa: E402
from vismtl.wsi import WSISettings  # noqa: E402
from vismtl.wsi.batching import ChunkTiles  # noqa: E402
from vismtl.wsi.finishing import ChunkFinisher, pack, packed_nbytes  # noqa: E402
from vismtl.wsi.geojson import feature_text, features_text  # noqa: E402
from vismtl.wsi.instances import extract_chunk  # noqa: E402
from vismtl.wsi.outlines import label_outlines  # noqa: E402
from vismtl.wsi.stitch import (  # noqa: E402
    ChunkCanvas,
    ChunkJob,
    ChunkMaps,
    chunk_maps,
    decide_instances,
    finish_maps,
    type_task_of,
)
from wsi_throughput import bench_plan, make_slide  # noqa: E402


def blended_chunks(model, tasks, slide_path: Path, count: int) -> list[tuple[dict, ChunkJob, int]]:
    """``(activated, job, tiles)`` of the slide's first ``count`` chunks with tissue, as the engine
    blends them (``activated``: the canvas's result)."""
    settings = WSISettings(mpp=0.5, tile=256, context=32, chunk=1024, margin=64, workers=0)
    plan = bench_plan(slide_path, settings, settings.margin)
    layout = plan.layout
    reader = ChunkTiles(slide_path, 1.0, plan, settings)
    dense = {n: t.num_outputs for n, t in tasks.items() if t.dense}
    chunks = []
    with torch.inference_mode():
        for index in range(min(count, len(plan.chunks))):
            _, images, _ = reader[index]
            first = sum(plan.counts[:index])
            canvas = ChunkCanvas(layout.region(*plan.chunks[index]), dense, 256, "ones", "cpu", disjoint=True)
            for start in range(0, len(images), 16):
                logits = model(images[start : start + 16])
                kept = {n: tasks[n].activate(logits[n])[:, :, 32:288, 32:288] for n in dense}
                canvas.add(kept, torch.from_numpy(plan.positions[first + start : first + start + len(kept["nuclei"])]))
            activated = {n: m.clone() for n, m in canvas.result().items()}
            chunks.append((activated, ChunkJob(canvas.region, layout.core(*plan.chunks[index]), 1.0, 0.5), len(images)))
    reader.close()
    return chunks


def outlines_one_by_one(labels: np.ndarray) -> list:
    return [reference_polygon(labels[box] == k) for k, box in enumerate(ndimage.find_objects(labels), 1) if box]


def ring_areas(rings) -> np.ndarray:
    return np.array([Polygon(ring).area for ring in rings])


@contextlib.contextmanager
def gc_tally(tally: dict):
    """Count the cyclic GC's collections, full ones and seconds into ``tally`` while inside."""
    started = {}

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started["at"] = time.perf_counter()
            return
        tally["collections"] += 1
        tally["full"] += info["generation"] == 2
        tally["seconds"] += time.perf_counter() - started.pop("at", time.perf_counter())

    gc.callbacks.append(callback)
    try:
        yield tally
    finally:
        gc.callbacks.remove(callback)


def pack_all(chunks, reused=None) -> None:
    """Every chunk's maps into a new shared-memory block (released at once), or into ``reused[k]``."""
    for k, (maps, _, _) in enumerate(chunks):
        block, _ = pack(maps, None if reused is None else lambda nbytes, k=k: reused[k])
        if reused is None:
            block.close()
            block.unlink()


def sent_before(activated: dict, tasks) -> dict:
    """What a chunk's finishing was sent until 016f312: the instance tasks' probabilities and
    the other tasks' decisions."""
    return {n: a if tasks[n].kind == "instance" else tasks[n].decide(a) for n, a in activated.items()}


def finish_as_before(sent: dict, tasks, job: ChunkJob):
    """A finishing process's work until 016f312: the instance tasks' cues from the
    probabilities it was sent (:func:`sent_before`), then the finishing."""
    instance = {n: value for n, value in sent.items() if tasks[n].kind == "instance"}
    maps = chunk_maps(instance, tasks, job)
    maps.decided = {n: value for n, value in sent.items() if n not in instance}
    return finish_maps(maps, tasks, job)


def full_chunk(job: ChunkJob, tasks) -> ChunkMaps:
    """The maps of a chunk whose every pixel some tile ran on."""
    (y0, x0, y1, x1), dense = job.region, {n: t for n, t in tasks.items() if t.dense}
    activated = {n: torch.full((1, t.num_outputs, y1 - y0, x1 - x0), 1 / t.num_outputs) for n, t in dense.items()}
    return chunk_maps(activated, tasks, job)


def nuclei_labels(maps: ChunkMaps, job: ChunkJob, tasks) -> np.ndarray:
    """A chunk's decided nuclei over its region."""
    y0, x0, y1, x1 = job.region
    return decide_instances(maps, tasks, (y1 - y0, x1 - x0))["nuclei"][0].numpy()


def nuclei_kept(labels: np.ndarray, job: ChunkJob, types: np.ndarray | None = None, names=()) -> object:
    """The nuclei a chunk keeps (:func:`extract_chunk` of its decided labels; typed by the votes of
    their pixels' ``types`` where given, classes ``names``)."""
    (rows, cols), (y0, x0) = job.crop, job.region[:2]
    core = (rows.start, cols.start, rows.stop, cols.stop)
    return extract_chunk(labels, core, (x0, y0), job.scale, job.mpp, "nuclei", types, names)


def map_bytes(chunks) -> int:
    """Bytes of the chunks' maps as packed for the finishing processes (integer maps narrowed)."""
    return sum(packed_nbytes(maps) for maps, _, _ in chunks)


def finish_in_processes(finisher: ChunkFinisher, chunks) -> None:
    with ThreadPoolExecutor(finisher.processes) as threads:
        list(threads.map(lambda c: finisher(c[0], c[1]), chunks))


def print_profile(finish, rounds: int) -> None:
    """The share of ``rounds`` calls of ``finish`` spent in each step of chunk finishing (cProfile,
    cumulative, with the profiler's overhead)."""
    profile = cProfile.Profile()
    profile.runcall(lambda: [finish() for _ in range(rounds)])
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (calls, primitive, own s, cumulative s, callers)
    total = max(entry[3] for entry in stats.values())
    steps = {
        "decide_instances": "decisions (all instance tasks)",
        "grow_seeds": "  glands' and lumina's growth",
        "watershed_from_cues": "  nuclei's markers and ring",
        "refine": "type votes and lumina's containment",
        "extract_chunk": "outlines, measurements, pieces, ids",
        "label_outlines": "  outlines",
        "chunk_pieces": "  pieces",
        "features_text": "Features' text",
    }
    print(f"chunk finishing, {rounds} rounds: {total:.3f} s under cProfile")
    for name, label in steps.items():
        seconds = sum(entry[3] for (_, _, function), entry in stats.items() if function == name)
        print(f"  {label:40s} {100 * seconds / total:5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--histology-checkpoint", help="weights for the histology model (default: random)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vismtl_bench")
    parser.add_argument("--profile", action="store_true", help="also where finishing spends its time (cProfile)")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # one core per finishing job, as in a finishing process
    model, tasks = quickstart_histology(args.histology_checkpoint)
    blended = blended_chunks(model, tasks, make_slide(args.cache / "tissue_20000.tiff", 20_000), args.chunks)
    chunks = [(chunk_maps(activated, tasks, job), job, count) for activated, job, count in blended]
    # what the finishing processes were sent until 016f312: the probabilities (and decisions)
    probabilities = [
        (ChunkMaps({}, {}, sent_before(activated, tasks)), job, count) for activated, job, count in blended
    ]
    tiles = sum(c[2] for c in chunks)
    inline = [finish_maps(maps, tasks, job) for maps, job, _ in chunks]
    labels = [tasks["nuclei"].decide_from_cues(maps.cues["nuclei"])[0].numpy() for maps, _, _ in chunks]
    full = packed_nbytes(full_chunk(blended[0][1], tasks)) / 2**20
    print(
        f"maps per chunk for finishing: {map_bytes(probabilities) / len(chunks) / 2**20:.1f} MB of probabilities "
        f"and decisions (until 016f312), {map_bytes(chunks) / len(chunks) / 2**20:.1f} MB of pixel cues, "
        f"rasters and decisions (now); a chunk full of tissue: {full:.1f} MB"
    )
    objects = sum(int(ids.max()) for ids in labels)
    print(f"{len(chunks)} chunks, {tiles} model tiles, {objects} nuclei")
    for ids in labels:  # the same outlines (equal areas: ties between equal pieces aside, the same rings)
        _, offsets, vertices = label_outlines(ids)
        vectorised = [vertices[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
        assert np.array_equal(ring_areas(vectorised), ring_areas(outlines_one_by_one(ids)))

    rows = [
        Row(
            "pixel cues, rasters and decisions of the chunks (chunk_maps; on a GPU, done there)",
            measure(lambda: [chunk_maps(activated, tasks, job) for activated, job, _ in blended], args.repeats),
            tiles,
            "cues",
        ),
    ]
    with gc_tally({"collections": 0, "full": 0, "seconds": 0.0}) as tally:
        seconds = measure(lambda: [finish_maps(m, tasks, j) for m, j, _ in chunks], args.repeats, warmup=0)
    rows.append(Row("finish chunks, this thread", seconds, tiles, "finish"))
    rows.append(
        Row(
            "pixel cues, then finish chunks, this thread (until 016f312: finishing made the cues)",
            measure(lambda: [finish_as_before(m.decided, tasks, j) for m, j, _ in probabilities], args.repeats),
            tiles,
            "finish",
        )
    )
    passes = args.repeats
    print(
        f"cyclic GC while finishing the chunks in this thread: {tally['collections'] / passes:.0f} collections "
        f"({tally['full'] / passes:.1f} full) and {tally['seconds'] / passes:.3f} s per pass "
        f"of {statistics.median(seconds):.3f} s"
    )
    rows.append(
        Row(
            "nuclei outlines, one object at a time",
            measure(lambda: [outlines_one_by_one(x) for x in labels], args.repeats),
            objects,
            "outlines",
        )
    )
    rows.append(
        Row(
            "nuclei outlines, label_outlines",
            measure(lambda: [label_outlines(x) for x in labels], args.repeats),
            objects,
            "outlines",
        )
    )
    # glands and lumina: their seeds grown by the definitions (scipy on the whole image) and in windows
    seeds = [
        (cues["seeds"][0].numpy(), tasks[n])
        for maps, _, _ in chunks
        for n, cues in maps.cues.items()
        if "seeds" in cues
    ]
    for (seed, task), grown in zip(seeds, [grow_seeds_whole_image(s, t.band, t.min_size) for s, t in seeds]):
        assert np.array_equal(grow_seeds(seed, task.band, task.min_size), grown)
    for name, grow in (("the definitions (scipy, whole image)", grow_seeds_whole_image), ("in windows", grow_seeds)):
        seconds = measure(lambda g=grow: [g(s, t.band, t.min_size) for s, t in seeds], args.repeats)
        rows.append(Row(f"glands and lumina grown from their seeds, {name}", seconds, tiles, "seeds"))
    # the nuclei's Features: an Instance and its text each, or all from the columns at once
    # the nuclei a chunk keeps, untyped and typed by the votes of their pixels (the type task's decisions)
    typing = type_task_of("nuclei", tasks)
    kept = [(nuclei_labels(maps, job, tasks), job, maps.decided[typing][0].numpy()) for maps, job, _ in chunks]
    for name, typed in (("untyped", False), ("typed by their pixels' votes", True)):
        names = tasks[typing].class_names if typed else ()
        seconds = measure(
            lambda t=typed, c=names: [nuclei_kept(n, j, types if t else None, c) for n, j, types in kept], args.repeats
        )
        rows.append(Row(f"nuclei kept (extract_chunk), {name}", seconds, objects, "kept"))
    found = [nuclei_kept(labels, job) for labels, job, _ in kept]
    features = sum(len(f.objects) for f in found)  # the nuclei the chunks keep
    assert [features_text(f.objects) for f in found] == [",\n".join(map(feature_text, f.instances)) for f in found]
    rows.append(
        Row(
            "nuclei Features, an Instance and feature_text each",
            measure(lambda: [",\n".join(map(feature_text, f.instances)) for f in found], args.repeats),
            features,
            "features",
        )
    )
    rows.append(
        Row(
            "nuclei Features, features_text (columns)",
            measure(lambda: [features_text(f.objects) for f in found], args.repeats),
            features,
            "features",
        )
    )
    new_blocks = measure(lambda: pack_all(chunks), args.repeats)
    reused = [pack(maps)[0] for maps, _, _ in probabilities]  # blocks of the right size, their pages in place
    try:
        used_blocks = measure(lambda: pack_all(chunks, reused), args.repeats)
        used_blocks_before = measure(lambda: pack_all(probabilities, reused), args.repeats)
    finally:
        for block in reused:
            block.close()
            block.unlink()
    rows.append(Row("pack maps into new shared-memory blocks", new_blocks, tiles, "pack"))
    rows.append(Row("pack the probabilities into blocks used before, until 016f312", used_blocks_before, tiles, "pack"))
    rows.append(Row("pack maps into blocks used before", used_blocks, tiles, "pack"))
    cores = len(os.sched_getaffinity(0))
    for processes in sorted({1, 2, cores // 2, cores} - {0}):
        with ChunkFinisher(tasks, processes) as finisher:
            finisher.start()
            results = [finisher(maps, job)[:2] for maps, job, _ in chunks]  # warm-up and check
            for (rasters, parts), (rasters_here, parts_here) in zip(results, inline):
                assert parts == parts_here and all(np.array_equal(rasters[n], rasters_here[n]) for n in rasters)
            seconds = measure(lambda f=finisher: finish_in_processes(f, chunks), args.repeats, warmup=0)
            rows.append(Row(f"finish chunks, {processes} processes", seconds, tiles, "processes"))
    print_table(rows, unit="items/s")  # items: model tiles, or nuclei in the outline and Feature rows
    if args.profile:
        print_profile(lambda: [finish_maps(m, tasks, j) for m, j, _ in chunks], args.repeats)


if __name__ == "__main__":
    main()
