"""Run a model over slides: tissue-masked tiles, batched inference, blending, chunked writes, resume.

Per slide, reading processes that serve every slide of the run (:mod:`vismtl.wsi.reading`), or
one reading thread, read the tiles chunk by chunk; the main thread runs the model and blends
its outputs into the chunk's canvas (:mod:`vismtl.wsi.stitcher`; ``wsi.stitch_thread``: in a
thread of its own), and writer threads finalise finished chunks (normalising, decisions,
post-processing, instances) and write them, inline or through finishing processes that also
write, so reading, the model and writing overlap. Memory holds only the chunks in flight,
whatever the slide's size. In a batch (:meth:`SlideRunner.run_many`) the next slide is
prepared and the last one concluded beside a slide's tiles (in finishing processes, where there
are some: :mod:`vismtl.wsi.preparation`, :mod:`vismtl.wsi.conclusion`).
Every finished chunk is journaled; ``resume`` skips finished slides and finished chunks.
One failing slide is recorded in the manifest and the batch goes on.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import torch

from vismtl.io import naming, out_of_space
from vismtl.progress import progress_bar
from vismtl.tasks import Task
from vismtl.wsi.batching import ChunkTiles, ModelClock, Prefetched, as_images, batches_across_chunks
from vismtl.wsi.conclusion import SlideEnd, conclude_slide
from vismtl.wsi.finishing import ChunkFinisher
from vismtl.wsi.graphed import ModelGraph, padded
from vismtl.wsi.inputs import SlideInput
from vismtl.wsi.plan import SlidePlan
from vismtl.wsi.preparation import NoTissueError, Prepared, SlideSetup, plan_tiles, prepare_slide, survey_slide
from vismtl.wsi.reader import SlideError
from vismtl.wsi.reading import ReadingPool
from vismtl.wsi.settings import WSISettings
from vismtl.wsi.stitcher import ChunkStitcher, StitchThread, finish_chunk

log = logging.getLogger("vismtl")


# What makes one slide fail (recorded in its entry) while the batch goes on.
SLIDE_ERRORS = (SlideError, OSError, RuntimeError, ValueError)


def failure(err: BaseException) -> str:
    """What a failed slide's entry and log say of ``err``; out of GPU memory, also what to do."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return f"out of GPU memory (lower --batch-size or --tile-cache-mb, or start fewer processes per GPU): {err}"
    return str(err)


class SlideJob:
    """One slide on its way through the phases of :class:`SlideRunner`: prepare, tiles, conclude.

    A phase that fails records the error in ``entry`` (its manifest entry, which then has a
    ``status``) and the later phases skip the slide.
    """

    def __init__(self, slide_input: SlideInput, out_dir: Path) -> None:
        self.input, self.folder = slide_input, out_dir / slide_input.name
        self.entry: dict[str, Any] = {"slide": str(slide_input.path), "name": slide_input.name}
        self.state: Prepared | None = None
        self.busy: dict[str, float] = {}  # the model thread's seconds: model_s, input_wait_s, ...
        self.writes: Callable[[], None] | None = None  # waits for the chunks still being finished
        self.seconds: dict[str, float] = {}  # each phase's own seconds
        self.reads: dict[str, Any] = {"tiles": 0, "unreadable": 0}  # this run's tiles read and left white
        self.reading: Reading | None = None  # its chunks being read, from the end of its preparation

    def stop_reading(self) -> None:
        if self.reading is not None:
            self.reading.close()
            self.reading = None


@dataclass
class Reading:
    """A slide's chunks read ahead (a thread collecting them from the reading processes, or reading
    them itself), from the end of the slide's preparation: while the slide before it still runs."""

    tiles: ChunkTiles
    loader: Prefetched

    def close(self) -> None:
        self.loader.close()  # stops and joins the reading thread before its slide handle closes
        self.tiles.close()


class SlideRunner:
    """Runs one model over slides with fixed settings (the Python API of tools/infer_wsi.py).

    Close it (or use it as a context manager) to stop its finishing processes, if any.

    Args:
        model: returns ``{task: logits}`` for uint8 images ``[B, 3, S, S]`` (a MultiTaskModel).
        tasks: the tasks to write (dense ones as rasters, instance ones also as GeoJSON,
            image-level ones as tissue-class proportions).
        settings: tiling and output settings.
        device: where the model runs.
        model_id: identifies the weights (a resume must use the same).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tasks: Mapping[str, Task],
        settings: WSISettings,
        device: torch.device,
        model_id: str = "",
    ) -> None:
        self.model, self.tasks, self.settings, self.device = model.eval(), dict(tasks), settings, device
        self._compiled: torch.nn.Module | None = None  # torch.compile's, made at the first batch
        self._graph = ModelGraph(self._forward_activated)  # wsi.cuda_graph's, captured at the first batch
        if settings.cuda_graph and device.type != "cuda":
            log.warning("wsi.cuda_graph needs a CUDA device; the model runs as it is on %s", device)
        has_instances = any(t.kind == "instance" for t in tasks.values())
        self._setup = SlideSetup(settings, settings.margin if has_instances else 0, model_id)
        self.finisher = ChunkFinisher(tasks, settings.finishing_processes(device.type, has_instances))
        self.readers: ReadingPool | None = None  # made by _readers, for the settings' reading processes
        self._spare: SimpleQueue = SimpleQueue()  # canvas buffers of finished chunks, from slide to slide
        self._readers_lock = threading.Lock()

    def close(self) -> None:
        self.finisher.close()
        if self.readers is not None:
            self.readers.close()

    def wait_ready(self) -> float:
        """Start the reading and finishing processes and wait until they are up: the seconds it took
        (for measurements of a warm engine: a batch pays this once, with its first slide)."""
        started = time.perf_counter()
        readers = self._readers()
        if readers is not None:
            readers.wait_ready()
        self.finisher.wait_ready()
        return time.perf_counter() - started

    def _readers(self) -> ReadingPool | None:
        """The reading processes the settings ask for (None: a reading thread), kept from slide to slide."""
        processes = self.settings.reading_workers(self.device.type)
        with self._readers_lock:
            if self.readers is not None and self.readers.processes != processes:
                self.readers.close()
                self.readers = None
            if self.readers is None and processes:
                self.readers = ReadingPool(processes)
            return self.readers

    def __enter__(self) -> SlideRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- slides ------------------------------------------------------------------------------

    def run(self, slide_input: SlideInput, out_dir: Path, resume: bool, mpp: float | None = None) -> dict[str, Any]:
        """Process one slide; returns its manifest entry (never raises for a bad slide)."""
        job = SlideJob(slide_input, Path(out_dir))
        try:
            self._prepare(job, resume, mpp)
            self._tiles(job)
        finally:
            job.stop_reading()  # an interrupted run's
        return self._conclude(job)

    def run_many(
        self, slides: Iterable[SlideInput], out_dir: Path, resume: bool, mpp: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Process slides one after the other, yielding their manifest entries in order; the same
        outputs as :meth:`run` on each.

        Only the tiles of a slide need the model. The next slide is prepared (opened, its
        tissue mask and plan made, its arrays created, its first chunks read) and the previous
        one concluded (its last chunks written, its GeoJSON put together, its pictures and
        summary written) in two helper threads while this one's tiles run, so the model does
        not wait for either between slides. ``slides`` is read one slide ahead, when that one is to be prepared (a
        rank taking slides as it becomes free: :class:`vismtl.wsi.claims.SlideClaims`).
        """
        upcoming = (SlideJob(slide, Path(out_dir)) for slide in slides)
        job = next(upcoming, None)
        if job is None:
            return
        handed: dict[str, Any] = {}
        try:
            with ThreadPoolExecutor(2, thread_name_prefix="vismtl-slide") as helpers:
                prepared = helpers.submit(self._prepare, job, resume, mpp)
                previous: SlideJob | None = None
                while job is not None:
                    prepared.result()
                    handed = {}

                    def hand_over(previous: SlideJob | None = previous, handed: dict = handed) -> None:
                        """Prepare the next slide and conclude the last one beside this one's tiles, from
                        its first batch on: its start (the first reads, the first batch) goes first."""
                        if handed.get("done"):
                            return
                        handed["done"] = True
                        try:  # the slides' source failing (a rank's claims) is not this slide's failure
                            handed["next"] = following = next(upcoming, None)
                        except Exception as err:  # noqa: BLE001 -- re-raised once this slide is through
                            handed["next"], handed["error"], following = None, err, None
                        if following is not None:
                            handed["prepared"] = helpers.submit(self._prepare, following, resume, mpp, True)
                        if previous is not None:
                            handed["concluded"] = helpers.submit(self._conclude, previous)

                    self._tiles(job, hand_over)
                    hand_over()  # the slide had no tiles to run
                    if "concluded" in handed:
                        yield handed["concluded"].result()
                    previous, job = job, handed["next"]
                    prepared = handed.get("prepared", prepared)
                yield self._conclude(previous)
                if "error" in handed:
                    raise handed["error"]
        finally:  # an interrupted batch: the slides prepared but not run stop reading
            for waiting in (job, handed.get("next")):
                if waiting is not None:
                    waiting.stop_reading()

    @contextmanager
    def _phase(self, job: SlideJob, name: str) -> Iterator[None]:
        """Times phase ``name`` of ``job`` (``prepare_s``, ...) and records a bad slide's error in its
        entry (the phase stops there)."""
        started = time.perf_counter()
        try:
            yield
        except NoTissueError as err:
            job.entry.update(status="no_tissue", error=str(err))
        except SLIDE_ERRORS as err:
            if out_of_space(err):  # not this slide's fault, and every later one's writes would fail too
                if named := naming(err, job.folder):
                    raise named from err
                raise
            message = failure(err)
            log.error("slide %s failed: %s", job.input.path, message)
            log.debug("%s", traceback.format_exc())
            job.entry.update(status="failed", error=f"{type(err).__name__}: {message}")
        finally:
            job.seconds[name] = time.perf_counter() - started

    def _prepare(self, job: SlideJob, resume: bool, mpp: float | None, beside: bool = False) -> None:
        """Open the slide, make its tissue mask and plan, and create its outputs (or end the job:
        skipped, no tissue, failed): :func:`~vismtl.wsi.preparation.prepare_slide`, ``beside``
        another slide's tiles in a finishing process if there are some, else in this thread."""
        with self._phase(job, "prepare_s"):
            self.finisher.start()  # the processes start while the tissue mask is made
            readers = self._readers()
            if readers is not None:
                readers.start()
            doing = f"preparing {job.input.name}"
            args = (self._setup, job.input, job.folder, resume, mpp)
            job.state = self.finisher.call(doing, prepare_slide, *args, here=not beside)
            if job.state is None:
                job.entry.update(status="skipped", error=None, reason="already done")
            elif len(job.state.plan.positions):  # in a batch, while the slide before it still runs
                job.reading = self._start_reading(job)

    def survey(self, slide_input: SlideInput, mpp: float | None = None) -> dict[str, Any]:
        """What running the slide would take, without the model and writing nothing (``--dry-run``):
        an entry with its ``status`` (``ok``, ``no_tissue`` or ``failed`` with the error), its
        size, resolution, tissue area and the model tiles to run."""
        entry: dict[str, Any] = {"slide": str(slide_input.path), "name": slide_input.name}
        try:
            seen = survey_slide(self._setup, slide_input, mpp, picture=False)
        except SLIDE_ERRORS as err:  # as a run records them
            return entry | {"status": "failed", "error": f"{type(err).__name__}: {failure(err)}"}
        entry |= {"status": "ok", "error": None, "size": list(seen.size), "mpp": seen.mpp}
        entry |= {"tissue_mm2": round(seen.tissue_um2 / 1e6, 4), "tiles": 0}
        if seen.tissue_um2 < self.settings.min_tissue_um2:
            return entry | {"status": "no_tissue"}
        entry["tiles"] = len(plan_tiles(self.tasks, self.settings, seen, {}).positions)
        return entry

    def _tiles(self, job: SlideJob, started: Callable[[], None] | None = None) -> None:
        """Run the model over the job's tiles (the chunks still being finished after its last batch
        are waited for by :meth:`_conclude`, which :meth:`run_many` runs beside the next slide);
        ``started()`` is called after the first batch."""
        if "status" in job.entry:
            return
        with self._phase(job, "tiles_s"):
            job.busy, job.writes = self._run_tiles(job, started)

    def _conclude(self, job: SlideJob) -> dict[str, Any]:
        """Wait for the job's last chunks, then put its GeoJSON together and write its pictures and
        summary (:func:`~vismtl.wsi.conclusion.conclude_slide`, in a finishing process if there are
        some): its manifest entry."""
        if "status" not in job.entry:
            with self._phase(job, "conclude_s"):
                started = time.perf_counter()
                writes, job.writes = job.writes, None
                if writes is not None:
                    writes()  # re-raises a writer's error: the slide failed
                job.busy["drain_s"] = time.perf_counter() - started
                if job.reads["tiles"] and job.reads["unreadable"] == job.reads["tiles"]:
                    raise SlideError(job.reads["first"])  # not one tile read: a broken file, not a damaged tile
                doing = f"putting {job.input.name}'s GeoJSON, pictures and summary together"
                job.entry.update(self.finisher.call(doing, conclude_slide, self._slide_end(job)))
        job.entry["seconds"] = round(sum(job.seconds.values()), 3)
        job.entry["outputs"] = str(job.folder)
        job.state = None  # its pictures: a batch of hundreds of slides must not keep them all
        return_free_memory()
        return job.entry

    def _slide_end(self, job: SlideJob) -> SlideEnd:
        """What :func:`~vismtl.wsi.conclusion.conclude_slide` needs of the job."""
        # the slide's own time (its phases overlap other slides' in run_many)
        timings = {"prepare_s": job.seconds["prepare_s"], "tiles_s": job.seconds["tiles_s"] + job.busy["drain_s"]}
        return SlideEnd(job.input, job.state, self.settings, timings | job.busy)

    # -- the pipeline --------------------------------------------------------------------------

    def _start_reading(self, job: SlideJob) -> Reading:
        """Start reading the job's chunks, a few ahead (reading processes, or a thread), at the end of
        its preparation. Tiles that could not be read (left white) are recorded in the slide's
        outputs and counted in ``job.reads``."""
        scale, plan, outputs, settings = job.state.scale, job.state.plan, job.state.outputs, self.settings
        pin = self.device.type == "cuda"  # copies to the GPU that do not wait for it
        tiles = ChunkTiles(job.input.path, scale, plan, settings, pin)

        def recorded(chunks: Iterable[tuple[int, torch.Tensor, list[tuple[int, str]]]]) -> Iterator:
            for k, images, unreadable in chunks:
                job.reads["tiles"] += len(images)
                if unreadable:
                    corners = tiles.corners(k) + settings.context  # the model tiles' own corners
                    outputs.note_unreadable([(corners[i].tolist(), error) for i, error in unreadable])
                    job.reads["unreadable"] += len(unreadable)
                    job.reads.setdefault("first", unreadable[0][1])
                yield k, images

        readers = self._readers()
        if readers is not None:  # reading processes; a thread copies their chunks out (pinned for a GPU)
            corners = [tiles.corners(k) for k in range(len(tiles))]
            take = functools.partial(as_images, pin=pin, copy=True)
            chunks = readers.chunks(tiles.path, scale, corners, tiles.size, ahead=2 * readers.processes, take=take)
            loader = Prefetched(recorded((k, images, bad) for k, (images, bad) in enumerate(chunks)))
        else:  # one reading thread: decoding releases the GIL, and no tile crosses a process boundary
            loader = Prefetched(recorded(tiles[i] for i in range(len(tiles))))
        return Reading(tiles, loader)

    def _run_tiles(
        self, job: SlideJob, started: Callable[[], None] | None = None
    ) -> tuple[dict[str, float], Callable[[], None] | None]:
        """Read (:meth:`_start_reading`) -> model (here) -> finalise and write (threads).

        Returns the seconds the model was busy and those it waited for tiles and for the writers,
        and a function that waits for the chunks still being finished after the last batch
        (re-raising a writer's error) and stops the writers.
        """
        slide_input, scale, plan, outputs = job.input, job.state.scale, job.state.plan, job.state.outputs
        if not len(plan.positions):
            return {"model_s": 0.0, "gap_s": 0.0, "gap_late_s": 0.0, "input_wait_s": 0.0, "output_wait_s": 0.0}, None
        reading, job.reading = job.reading, None  # started by _prepare
        threads, engine_threads = torch.get_num_threads(), self.settings.engine_threads(self.device.type)
        if engine_threads:
            torch.set_num_threads(engine_threads)
        try:
            return self._pipeline(reading.loader, slide_input, plan, outputs, scale, started)
        finally:
            torch.set_num_threads(threads)
            reading.close()

    def _pipeline(
        self,
        loader: Iterable,
        slide_input: SlideInput,
        plan: SlidePlan,
        outputs,
        scale: float,
        started: Callable[[], None] | None,
    ) -> tuple[dict[str, float], Callable[[], None]]:
        settings = self.settings
        seconds = {"input_wait_s": 0.0, "output_wait_s": 0.0}
        clock = ModelClock(self.device)
        writers = settings.writer_threads(self.finisher.processes)
        write = functools.partial(
            finish_chunk,
            tasks=self.tasks,
            finisher=self.finisher,
            plan=plan,
            scale=scale,
            outputs=outputs,
            device=self.device,
            decide_on_gpu=settings.decide_on_gpu,
        )
        writer = ThreadPoolExecutor(writers, thread_name_prefix="vismtl-writer")
        try:
            with torch.inference_mode():
                stitcher = ChunkStitcher(self.tasks, settings, self.device, plan, write, writer, writers, self._spare)
                if settings.stitch_thread:
                    stitcher = StitchThread(stitcher, self.device)
                bar = progress_bar(total=len(plan.positions), desc=slide_input.name, unit="tile", leave=False)
                try:
                    batches = batches_across_chunks(loader, settings.batch_size, seconds, self.device)
                    for pieces, images in batches:
                        activated = {}
                        if len(images):
                            with clock:
                                activated = self._activated(images)
                        for piece in pieces:
                            if piece.start == 0:
                                seconds["output_wait_s"] += stitcher.begin(piece.chunk, piece.total)
                            if piece.count:
                                part = {n: v[piece.offset : piece.offset + piece.count] for n, v in activated.items()}
                                seconds["output_wait_s"] += stitcher.add(piece.start, part)
                            if piece.start + piece.count == piece.total:
                                seconds["output_wait_s"] += stitcher.end()
                        bar.update(len(images))
                        if started is not None:  # the first batch is in: run_many's helpers may start
                            started()
                            started = None
                except BaseException:
                    if isinstance(stitcher, StitchThread):
                        stitcher.abort()
                    raise
                finally:
                    bar.close()  # before a Ctrl-C's message, not after it
        except BaseException:
            writer.shutdown(wait=True)  # the chunks handed over are still written (and journaled)
            raise
        model_s = clock.seconds()
        gap_s, gap_late_s = clock.gaps()
        busy = {"model_s": model_s, "gap_s": gap_s, "gap_late_s": gap_late_s, **seconds}
        return busy, functools.partial(close_writers, stitcher, writer)

    def _activated(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.settings.cuda_graph and images.is_cuda:
            outputs = self._graph(images, self.settings.batch_size, self.settings.amp)
            if outputs is not None:
                return outputs
        if not self.settings.compile:
            return self._forward_activated(images)
        count = len(images)
        activated = self._forward_activated(padded(images, self.settings.batch_size), self._compiled_forward)
        return {n: value[:count] for n, value in activated.items()}

    def _forward_activated(self, images: torch.Tensor, forward=None) -> dict[str, torch.Tensor]:
        """The model (or ``forward``, its compiled form) and its tasks' activations: also what a CUDA
        graph captures (hence autocast without its cache, as capturing requires)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.settings.amp, cache_enabled=False):
            logits = (forward or self.model)(images)
        return {n: t.activate(logits[n]) for n, t in self.tasks.items()}

    def _compiled_forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model compiled by ``torch.compile`` (at its first call) on ``images``; where compiling
        fails (no C++ compiler, an op inductor lacks), the model itself from then on, with a warning."""
        if self._compiled is not None:
            return self._compiled(images)
        compiled = torch.compile(self.model, dynamic=False)
        try:
            logits = compiled(images)  # compiles now; the run's later batches reuse the graph
        except Exception as err:  # noqa: BLE001 -- any compiler failure: run uncompiled
            first_line = (str(err).strip().splitlines() or [""])[0]
            log.warning("torch.compile failed, the model runs uncompiled: %s: %s", type(err).__name__, first_line)
            compiled, logits = self.model, self.model(images)
        self._compiled = compiled
        return logits


def return_free_memory() -> None:
    """Give the heap's free memory back to the system (glibc's malloc_trim; elsewhere nothing).

    A slide's canvases and maps are freed in threads that glibc gives heaps (arenas) of their
    own, which keep what they free: over a batch of slides the process grew by about 1 GB more
    than the slides' own needs without this (``benchmarks/wsi_batch_memory.py``)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def close_writers(stitcher: ChunkStitcher | StitchThread, writer: ThreadPoolExecutor) -> None:
    """Wait for a slide's chunks still being finished (re-raising a writer's error), then stop its writers."""
    try:
        stitcher.close()
    finally:
        writer.shutdown(wait=True)
