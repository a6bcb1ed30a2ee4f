"""Settings of a whole-slide run (the config's ``wsi`` section, overridable on the command line)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from vismtl.config import ConfigError

DEFAULT_CHUNK = 1024  # px: chunks of 256 px tiles; the unit of writing and resuming


@dataclass(frozen=True)
class WSISettings:
    """How slides are tiled, run and written.

    Attributes:
        mpp: microns per pixel of the output grid (and of the model's input).
        tile: output pixels kept per tile (a side).
        stride: step between tiles on the output grid (default ``tile``: no overlap; smaller
            values blend overlapping tiles with ``blend``).
        context: pixels the model sees on each side of the kept tile (discarded afterwards).
        chunk: side of the output chunks: the unit of writing, of the zarr arrays and of resuming;
            a multiple of the step. Default: the multiple nearest 1024 px (1024 for 256 px tiles).
        margin: extra pixels computed around each chunk, the context that makes the decisions
            inside its core those of the whole slide (the watershed's and growth's reach, with room
            to spare). Objects crossing the chunk's border come out whole at any size: the chunks
            keep their pieces, put together at the slide's end (:mod:`vismtl.wsi.pieces`); a margin
            larger than the objects decides their far pixels with all their context. At most
            ``chunk``; 0 when there is no instance task.
        blend: window over overlapping tiles: ``"ones"`` or ``"hann"``.
        batch_size: tiles per model call.
        workers: tile-reading processes (each opens its own slide handle); 0 reads in one thread of
            the main process, which copies no tile between processes. Default: 0 when the model
            runs on the CPU (a thread decodes ~190 MP/s, far more than CPU models consume, and
            is the fastest choice on few cores: ``benchmarks/wsi_throughput.py``); on a GPU one per
            4 cores of this process's share of the machine, at most 4 (the 16 cores of one
            process per GPU: 4; of three processes sharing a GPU under torchrun: 1 each).
        threads: CPU threads of the engine's process: the model's on the CPU (default:
            PyTorch's, one per core; where torchrun started several processes, each of which
            it gives one thread unless ``OMP_NUM_THREADS`` is set, this process's share of the
            cores), the copies and packing around it on a GPU (default: 4, at most the share).
            With few cores, fewer threads than cores leaves room for reading and writing: a
            model thread sharing a core with the reader stalls every parallel operation it
            takes part in (``--threads 1`` is fastest for light models on 2 cores). On a GPU,
            one thread per core kept 3 cores busy in the engine's process, which the reading
            and finishing processes need (``benchmarks/wsi_throughput.py --threads 0 1 4``).
        writers: threads that finish and write chunks while the model runs on the next ones
            (default: 2, or one more than ``finish_workers``, whose jobs they wait on).
        finish_workers: processes that finish chunks (instance decisions such as watershed,
            outlines, measurements: Python that holds the GIL); 0: the writer threads do it.
            Default: 0 on the CPU (its cores run the model) and for models without instance
            tasks; on a GPU the cores not reading tiles (all but ``workers`` + 2, of this
            process's share of the machine under torchrun). They are spawned: a script that
            runs the engine with them needs the ``if __name__ == "__main__":`` guard.
        tile_cache_mb: memory (on the model's device) for tiles kept between neighbouring chunks:
            the tiles of a chunk's margin are its neighbours' own tiles, which are then taken
            from there instead of computed again (about 16 instead of 36 tiles per 1024 px
            chunk on large tissue; :mod:`vismtl.wsi.plan`). Disjoint tiles only (the default
            stride). 0 computes every chunk's tiles; tiles beyond the budget are computed again.
        stitch_thread: blend the model's outputs into chunks, keep tiles for later chunks and
            hand chunks to the writers in a thread of its own (on a GPU, on a CUDA stream of its
            own), so that the model's thread only reads batches and runs the model. Off by
            default: on an H100 with the histology quickstart model it raised the model's share
            of the pipeline from 62 % to 87 % but not the slide's speed (5.07 vs 5.00 s), since
            the engine's process is bound by Python's GIL there and the model's launches only
            took longer (``benchmarks/wsi_throughput.py --stitch-thread off on``,
            docs/benchmarks.md). The outputs are the same either way.
        amp: bfloat16 autocast, on GPUs and on CPUs that compute bfloat16 natively (AVX-512 BF16,
            AMX): the histology quickstart ran slides 1.8-2.0x faster on such a CPU, with 98-99.7 %
            of its objects matched at IoU 0.5 to float32's (``benchmarks/wsi_precision.py``).
        compile: compile the model with ``torch.compile`` at its first batch, every batch padded
            to ``batch_size`` so that one graph serves the whole run. On 2 CPU cores the histology
            quickstart ran 1.24x (bfloat16) to 1.27x (float32) faster; the first compile took about
            50 s, which inductor's on-disk cache spares later runs (docs/benchmarks.md).
        cuda_graph: on a CUDA device, capture the model and its tasks' activations as a CUDA graph
            at the first batch and replay it for every batch (padded to ``batch_size``): one launch
            instead of the model's hundreds from Python, in a process whose one GIL the reading,
            stitching and writing threads share (:mod:`vismtl.wsi.graphed`). A model that
            synchronises with the host cannot be captured and runs as it is, with a warning. Off:
            on an H200 it was no measurable gain (faster for the histology quickstart in one call,
            not in the next; slower behind a model of the published Cerberus's cost;
            ``benchmarks/wsi_throughput.py --cuda-graph off on``, docs/benchmarks.md).
        decide_on_gpu: on a GPU, decide the nuclei (watershed, band 3) beside the model, the CPU's
            ids exactly (:mod:`vismtl.tasks.flood_on_device`): the finishing processes then get
            the ids (4 bytes a pixel or fewer) instead of the cues (10) and skip the decision (13 %
            of a chunk's finishing). Off: it adds over a hundred kernel launches a chunk to the
            engine's process, whose one GIL bounds a light model's pipeline, and on an H200 it was
            no measurable gain (``benchmarks/wsi_throughput.py --decide-on-gpu off on``).
        thumbnail_size: longest side (at most) of the tissue-mask thumbnail and of the picture of
            the predictions (``thumbnail.png``): the finest pyramid level within it and the
            output grid's size, or that size where no level fits.
        mask_mpp: microns per pixel of the tissue-mask thumbnail (8: about 1.25x, where tissue
            masks are made).
        mask_dir: folder of user tissue masks overriding the automatic mask: ``<slide name>.png``
            (nonzero: tissue) or ``<slide name>.geojson`` (regions drawn on the slide,
            as QuPath exports annotations; :func:`vismtl.wsi.tissue.load_geojson_mask`).
        tissue: ``"auto"`` (run tiles touching the automatic or user tissue mask) or ``"all"``
            (every tile, e.g. for images that are not H&E).
        min_tissue_um2: a slide whose mask covers less is reported as ``no_tissue`` (blank glass,
            a few specks of dust).
        max_upsampling: a slide scanned coarser than ``mpp`` by more than this factor fails
            instead of being run upsampled: a model sees blur there, and the tiles grow with the
            square of the factor (``--mpp 25`` for 0.25, or a low-resolution export, made a
            1,000 px image 10,000 tiles).
    """

    mpp: float = 0.5
    tile: int = 256
    stride: int | None = None
    context: int = 32
    chunk: int | None = None
    margin: int = 64
    blend: str = "ones"
    batch_size: int = 16
    workers: int | None = None
    threads: int | None = None
    writers: int | None = None
    finish_workers: int | None = None
    tile_cache_mb: float = 512.0
    stitch_thread: bool = False
    amp: bool = False
    compile: bool = False
    cuda_graph: bool = False
    decide_on_gpu: bool = False
    thumbnail_size: int = 2048
    mask_mpp: float = 8.0
    mask_dir: str | None = None
    tissue: str = "auto"
    min_tissue_um2: float = 10_000.0
    max_upsampling: float = 2.0

    def __post_init__(self) -> None:
        if self.tissue not in ("auto", "all"):
            raise ConfigError(f"wsi.tissue must be 'auto' or 'all', not '{self.tissue}'")
        if self.blend not in ("ones", "hann"):
            raise ConfigError(f"wsi.blend must be 'ones' or 'hann', not '{self.blend}'")
        if not self.tile > 0:
            raise ConfigError(f"wsi.tile must be a positive number of pixels, not {self.tile}")
        if not self.mpp > 0:
            raise ConfigError(f"wsi.mpp must be a positive number of microns per pixel, not {self.mpp}")
        if self.context < 0:
            raise ConfigError(f"wsi.context must be 0 or more pixels, not {self.context}")
        if self.stride is not None and not 0 < self.stride <= self.tile:
            raise ConfigError(f"wsi.stride must lie in [1, wsi.tile = {self.tile}], not {self.stride}")
        if self.chunk is not None and (self.chunk < 1 or self.chunk % self.step):
            raise ConfigError(
                f"wsi.chunk must be a positive multiple of the step ({self.step} px: wsi.stride, else wsi.tile), "
                f"not {self.chunk}; without it, the multiple nearest {DEFAULT_CHUNK} px"
            )
        if self.batch_size < 1:  # else no batch ever fills and the slide never ends
            raise ConfigError(f"wsi.batch_size must be at least 1, not {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"wsi.threads must be at least 1 (or None for PyTorch's default), not {self.threads}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"wsi.workers must be 0 (a reading thread) or more processes, not {self.workers}")
        if self.finish_workers is not None and self.finish_workers < 0:
            raise ConfigError(f"wsi.finish_workers must be 0 or more, not {self.finish_workers}")
        if self.tile_cache_mb < 0:
            raise ConfigError(f"wsi.tile_cache_mb must be 0 (no tiles kept) or more, not {self.tile_cache_mb}")
        if not isinstance(self.stitch_thread, bool):
            raise ConfigError(f"wsi.stitch_thread must be True or False, not {self.stitch_thread!r}")
        if not isinstance(self.cuda_graph, bool):
            raise ConfigError(f"wsi.cuda_graph must be True or False, not {self.cuda_graph!r}")
        if not isinstance(self.decide_on_gpu, bool):
            raise ConfigError(f"wsi.decide_on_gpu must be True or False, not {self.decide_on_gpu!r}")
        if self.cuda_graph and self.compile:
            raise ConfigError("wsi.cuda_graph and wsi.compile: choose one (each replaces the model's forward)")
        if not 0 <= self.margin <= self.chunk_side:
            raise ConfigError(f"wsi.margin must lie in [0, the chunk's side = {self.chunk_side}], not {self.margin}")
        if not self.max_upsampling >= 1:
            raise ConfigError(f"wsi.max_upsampling must be 1 (no upsampling) or more, not {self.max_upsampling}")
        if self.writers is not None and self.writers < 1:
            raise ConfigError(f"wsi.writers must be at least 1, not {self.writers}")

    @property
    def step(self) -> int:
        return self.stride or self.tile

    @property
    def chunk_side(self) -> int:
        """``chunk``, or the multiple of the step nearest ``DEFAULT_CHUNK`` (at least one step)."""
        return self.chunk or max(1, round(DEFAULT_CHUNK / self.step)) * self.step

    def reading_workers(self, device: str) -> int:
        """``workers``, or its default for a model on ``device`` ("cpu", "cuda", ...)."""
        if self.workers is not None:
            return self.workers
        return 0 if device == "cpu" else max(1, min(4, _cores() // 4))

    def engine_threads(self, device: str) -> int | None:
        """``threads``, or its default for a model on ``device`` (None: PyTorch's)."""
        if self.threads is not None:
            return self.threads
        if device == "cpu":
            # torchrun gives each of several processes one thread (OMP_NUM_THREADS=1)
            return _cores() if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1 else None
        return min(4, _cores())

    def finishing_processes(self, device: str, instances: bool) -> int:
        """``finish_workers``, or its default for a model on ``device`` with or without instance tasks."""
        if self.finish_workers is not None:
            return self.finish_workers
        if device == "cpu" or not instances:
            return 0
        return max(1, _cores() - self.reading_workers(device) - 2)

    def writer_threads(self, processes: int) -> int:
        """``writers``, or enough threads to keep ``processes`` finishing workers busy."""
        return self.writers if self.writers is not None else max(2, processes + 1)

    def fingerprint(self) -> dict[str, Any]:
        """What a finished or partial output depends on (a resume must match it): the grid, the
        precision and which tiles run (not how they are run: compile, CUDA graph, processes)."""
        keys = ("mpp", "tile", "stride", "context", "chunk", "margin", "blend", "amp", "tissue", "mask_dir", "mask_mpp")
        return {k: v for k, v in asdict(self).items() if k in keys} | {"chunk": self.chunk_side}


def _cores() -> int:
    """CPU cores this process may use: its share where torchrun started several on the machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
