"""Whole-slide engine throughput: tissue megapixels per second and how busy the model is.

    python benchmarks/wsi_throughput.py [--size 20000] [--workers 0 2] [--threads 0 1] [--histology-checkpoint CKPT]

On a GPU (the model runs there when CUDA is available) the engine's defaults give the
machine's cores to reading (4 processes) and to finishing chunks (processes on the rest);
``--workers``, ``--finish-workers`` and ``--writers`` override them. ``--tile-cache-mb 0 512``
compares computing every chunk's margin tiles again with keeping the tiles for the chunks that
need them next (the default); the "tiles" column counts the tiles the model ran, so compare
those rows by their seconds.

A 20,000 x 20,000 tiled-JPEG pyramidal TIFF at 0.5 um/px with about 10 % tissue (generated
H&E-like tiles) is made once (cached in --cache). Two runs at 0.5 um/px with 256 x 256 tiles:

- a trivial model (one 1x1 convolution): the engine's own ceiling (reading, masking,
  stitching, writing), in megapixels of tissue tiles per second;
- the histology quickstart model (configs/cerberus/quickstart_tissue.py, random weights
  unless a checkpoint is given): the fraction of wall time the model is busy;
- with ``--replay``, the histology tasks with the model's outputs on 16 real tiles handed
  out again and again (a model that costs nothing): the tiles/s the rest of the engine
  allows, i.e. the most any GPU could get out of it with this post-processing;
- with ``--replay-behind CONFIG``, the same outputs handed out after CONFIG's model (random
  weights) has run on the batch: how busy the engine keeps a model that costs what that one
  costs (the published Cerberus, ``configs/cerberus/cerberus_resnet34.py``, 13x the
  quickstart's multiply-accumulates), under the trained quickstart's post-processing load
  (random weights would make the post-processing's load meaningless).

The runs of a row share one engine (``SlideRunner``) whose finishing processes, if any, are up
before the first run is timed, as for every slide of a batch after the first (the seconds
they took to start are printed; the first slide of a batch pays them).

Before timing, the trivial run's raster is checked against the model applied to the slide
directly on a few tiles. First, the reads alone (one process, no model, no writing) of the
trivial run's chunks, decoded by tifffile (the default for TIFF pyramids) and by OpenSlide:
how much of the budget decoding takes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import zarr
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_description, quickstart_histology  # noqa: E402
from histology_model_rate import seconds_per_call  # noqa: E402
from vismtl.config import ConfigError, load_config  # noqa: E402
from vismtl.models import build_model  # noqa: E402
from vismtl.tasks import build_tasks  # noqa: E402
from vismtl.wsi import Slide, SlideRunner, WSISettings  # noqa: E402
from vismtl.wsi.batching import ChunkTiles  # noqa: E402
from vismtl.wsi.inputs import SlideInput  # noqa: E402
from vismtl.wsi.plan import SlidePlan, plan_slide  # noqa: E402
from vismtl.wsi.synthetic import tissue_boxes_content, write_slide  # noqa: E402
from vismtl.wsi.tiling import TileLayout, TissueIndex  # noqa: E402
from vismtl.wsi.tissue import tissue_mask  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_slide(path: Path, size: int) -> Path:
    """~10 % tissue in four blocks."""
    if path.is_file():
        return path
    side = int(size * 0.158)  # four blocks of side^2 = 10 % of size^2
    corners = [(size // 8, size // 8), (size // 8, size // 2), (size // 2, size // 8), (size // 2, size // 2)]
    boxes = [(y, x, y + side, x + side) for y, x in corners]
    return write_slide(path, size, size, tissue_boxes_content(boxes), mpp=0.5, tile=512)


class OneByOne(nn.Module):
    """The trivial model: a single 1x1 convolution of the image (its weights take the 1/255 scaling)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        torch.manual_seed(0)
        nn.init.normal_(self.conv.weight, std=0.02 / 255.0)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mask": self.conv(image.float())}


class Replayed(nn.Module):
    """A model that costs nothing but gives real outputs: ``outputs`` of a batch of real tiles,
    handed out row by row in turn. The histology tasks' post-processing then runs on real
    predictions at the rate the rest of the engine allows: the ceiling that a GPU fast enough
    to make the model free would meet. With ``cost``, that model runs on the batch first (its
    outputs dropped): the model then costs what ``cost`` costs."""

    def __init__(self, outputs: dict[str, torch.Tensor], cost: nn.Module | None = None) -> None:
        super().__init__()
        self.outputs = outputs
        self.cost = cost

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cost is not None:
            self.cost(image)
        stored = len(next(iter(self.outputs.values())))
        if len(image) <= stored:  # the first rows as views: no copy of the output maps
            return {name: value[: len(image)] for name, value in self.outputs.items()}
        rows = torch.arange(len(image), device=image.device) % stored  # made there: a CUDA graph can hold it
        return {name: value[rows] for name, value in self.outputs.items()}


def real_outputs(model: nn.Module, slide: Path, size: int, side: int) -> dict[str, torch.Tensor]:
    """The model's outputs on 16 tiles of ``side`` pixels from the slide's first tissue block."""
    with Slide.open(slide) as source:
        y0 = x0 = size // 8 + 64
        tiles = np.stack([source.read(x0 + side * i, y0, side, side, 1.0) for i in range(16)])
    with torch.no_grad():
        return model.eval().to(DEVICE)(torch.from_numpy(tiles).permute(0, 3, 1, 2).to(DEVICE))


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_alone(model: nn.Module, tasks, batch: int, amp: bool, repeats: int = 5, as_fed: bool = False) -> float:
    """Tiles/s of the model and its activations on random uint8 batches: what the engine must keep up with.
    Planar batches, or ``as_fed``: channels-last, as the engine feeds them (on the H200 the costly
    model ran 302 tiles/s on planar batches, its calls in the engine 410-425)."""
    images = torch.randint(0, 256, (batch, 320, 320, 3), dtype=torch.uint8, device=DEVICE).permute(0, 3, 1, 2)
    images = images if as_fed else images.contiguous()
    return batch / seconds_per_call(model.eval().to(DEVICE), tasks, images, amp, repeats, warmup=1)


def run(runner: SlideRunner, slide: Path, cache: Path, prefix: str, check=None) -> dict:
    """One run of the engine: its timings; ``check(out_dir)`` looks at the outputs before they go."""
    out = Path(tempfile.mkdtemp(prefix=prefix, dir=cache))
    started, cpu = time.perf_counter(), _process_cpu()
    entry = runner.run(SlideInput(slide, "bench"), out, resume=False)
    wall, cpu = time.perf_counter() - started, _process_cpu() - cpu
    if entry["status"] != "done":
        raise SystemExit(f"the run failed: {entry}")
    summary = json.loads((out / "bench" / "summary.json").read_text())
    if check is not None:
        check(out)
    shutil.rmtree(out)
    timings = summary["timings"]
    # one line per run as it ends, so that a run cut short by a time limit still reports
    cache = {k: summary[k] for k in ("tiles_shared", "tile_cache_mb")}
    print(f"  {prefix}run: {timings} {cache}", file=sys.stderr, flush=True)
    return {"wall": wall, "cpu": cpu, "tiles": summary["tiles"], **timings}


def _process_cpu() -> float:
    """CPU seconds of this process, all its threads (not the reading and finishing processes)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def compare(args, label: str, model, tasks, slide: Path, context: int, repeats: int, check=None) -> None:
    """One row per ``--workers`` x ``--threads`` x ``--finish-workers`` x ``--tile-cache-mb`` x
    ``--batch-size`` x ``--stitch-thread`` x ``--compile`` x ``--cuda-graph`` x ``--decide-on-gpu``
    setting: medians of ``repeats`` runs. Rows differing only in the last five share one engine,
    and their runs alternate (a compiled row's first run includes the compile)."""
    instances = bool(context)  # the trivial model has no instances, so no margins
    for workers, threads, finishers, cache_mb in itertools.product(
        args.workers,
        args.threads,
        args.finish_workers if instances else [None],
        args.tile_cache_mb if instances else [None],
    ):
        settings = bench_settings(args, threads, context, workers, finishers, cache_mb)
        variants = {
            (batch, stitch, compiled, graphed, decided): dataclasses.replace(
                settings,
                batch_size=batch,
                stitch_thread=stitch,
                compile=compiled,
                cuda_graph=graphed,
                decide_on_gpu=decided,
            )
            for batch, stitch, compiled, graphed, decided in itertools.product(
                args.batch_size, args.stitch_thread, args.compile, args.cuda_graph, args.decide_on_gpu
            )
            if not (compiled and graphed)  # one or the other (WSISettings)
        }
        runs: dict = {key: [] for key in variants}
        with SlideRunner(model.to(DEVICE), tasks, settings, DEVICE) as runner:
            # as for every slide of a batch but the first: the reading and finishing processes are up
            ready = runner.wait_ready()
            if runner.finisher.processes:
                print(f"  finishing and reading processes up in {ready:.1f} s", file=sys.stderr)
            for _ in range(repeats):
                for key, variant in variants.items():
                    runner.settings = variant
                    runs[key].append(run(runner, slide, args.cache, f"wsi_{label}_", check))
        processes = settings.finishing_processes(DEVICE.type, instances)
        for key, variant in variants.items():
            name = f"{label}, workers {workers}, threads {threads or 'all'}, finish workers {processes}"
            if instances:
                name += f", tile cache {settings.tile_cache_mb:g} MB"
            if len(args.batch_size) > 1:
                name += f", batch {variant.batch_size}"
            if len(args.stitch_thread) > 1:
                name += f", stitch thread {'on' if variant.stitch_thread else 'off'}"
            if len(args.compile) > 1:
                name += f", compiled {'on' if variant.compile else 'off'}"
            if len(args.cuda_graph) > 1:
                name += f", CUDA graph {'on' if variant.cuda_graph else 'off'}"
            if len(args.decide_on_gpu) > 1:
                name += f", nuclei decided on the GPU {'on' if variant.decide_on_gpu else 'off'}"
            report(name, runs[key], settings.tile)


def report(name: str, results: list[dict], tile: int) -> None:
    """Medians over repeats. "pipeline": reading, model, blending, post-processing and writing
    of the tiles; "slide": the whole call (adds tissue mask, GeoJSON, thumbnail, summary).
    "wait in/out": the share of the pipeline the model thread waited for tiles / for writers
    before its last batch; "drain": the share after it, spent waiting for the last chunks'
    finishing and writes (a slide's tail, which a batch of slides overlaps with the next slide).
    "gaps": the share the model was idle between its calls (on a GPU, the device: between its
    first batch and its last), "late": the part of it before the model's thread even began the
    next call (ModelClock.gaps); the rest of a GPU's gaps went to work queued between the model's
    calls (copies, stitching) or to waits elsewhere.
    "finish/s": tiles per second of chunk finishing (post-processing) on one core, i.e. how
    many tiles/s each finishing process or writer thread can absorb. "cores": CPU seconds of the
    engine's own process (all its threads) per second of the slide call; near 1 with the model on
    a GPU, its threads take turns at one GIL and that process bounds the slide."""
    tiles = results[0]["tiles"]
    mp = tiles * tile**2 / 1e6
    pipe = statistics.median(r["tiles_s"] for r in results)
    wall = statistics.median(r["wall"] for r in results)
    busy_pipe = statistics.median(r["model_s"] / r["tiles_s"] for r in results)
    busy_wall = statistics.median(r["model_s"] / r["wall"] for r in results)
    waits = [
        100 * statistics.median(r[k] / r["tiles_s"] for r in results)
        for k in ("input_wait_s", "output_wait_s", "drain_s", "gap_s", "gap_late_s")
    ]
    finish = statistics.median(r["tiles"] / max(r["finish_s"], 1e-9) for r in results)
    cores = statistics.median(r["cpu"] / r["wall"] for r in results)
    print(
        f"{name:56s} {len(results):>3d} {tiles:6d} {pipe:8.2f} {wall:8.2f} {tiles / pipe:8.1f} "
        f"{mp / pipe:8.1f} {mp / wall:8.1f} {100 * busy_pipe:8.1f}% {100 * busy_wall:8.1f}% "
        + " ".join(f"{share:6.1f}%" for share in waits)
        + f" {finish:8.1f} {cores:6.2f}"
    )


HEADER = (
    f"{'run':56s} {'n':>3s} {'tiles':>6s} {'pipe s':>8s} {'slide s':>8s} {'tiles/s':>8s} "
    f"{'MP/s':>8s} {'MP/s*':>8s} {'busy':>9s} {'busy*':>9s} {'wait in':>7s} {'out':>7s} {'drain':>7s} "
    f"{'gaps':>7s} {'late':>7s} {'finish/s':>8s} {'cores':>6s}\n"
    "(tiles/s, MP/s, busy and waits over the tile pipeline; * over the whole slide call; gaps: the model idle "
    "between its first and last batch, late: of which its thread came late; cores: the engine "
    "process's CPU s per s of the slide call; medians of n runs)"
)


def bench_plan(slide_path: Path, settings: WSISettings, margin: int = 0) -> SlidePlan:
    """The engine's plan of the bench slide at scale 1 (the slide is at the target 0.5 um/px)."""
    with Slide.open(slide_path) as slide:
        thumbnail, thumb_scale = slide.thumbnail(int(slide.width * 0.5 / settings.mask_mpp))
        layout = TileLayout(
            slide.height, slide.width, settings.tile, settings.step, settings.context, settings.chunk_side, margin
        )
    return plan_slide(layout, TissueIndex(tissue_mask(thumbnail), thumb_scale), {}, 0.5)


def read_only(
    slide_path: Path, settings: WSISettings, fast_tiff: bool, repeats: int, scale: float = 1.0, former=False
) -> tuple[float, int]:
    """(median seconds, tiles) of reading every chunk the engine reads (no margins), in this process.

    ``scale`` < 1 resamples (the same output boxes over a larger part of the slide); ``former``:
    as reads resampled before 2026-11-27, each region on its own bounds rounded to the level's
    pixels (one resize), instead of block by block on a fixed grid (exact where reads overlap).
    """
    plan = bench_plan(slide_path, settings)
    chunks = ChunkTiles(slide_path, 1.0, plan, settings)
    seconds = []
    for _ in range(repeats):
        with Slide.open(slide_path, fast_tiff=fast_tiff) as slide:
            read = functools.partial(former_read, slide) if former else slide.read
            started = time.perf_counter()
            for index in range(len(chunks)):
                read(*chunks.box(index)[1], scale)
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), len(plan.positions)


def former_read(slide: Slide, x: int, y: int, width: int, height: int, scale: float) -> np.ndarray:
    factor = scale * slide.level_downsamples[slide.best_level(scale)]
    left, top = round(x / factor), round(y / factor)
    right, bottom = round((x + width) / factor), round((y + height) / factor)
    patch = slide._read_level_padded(slide.best_level(scale), left, top, right - left, bottom - top)
    return cv2.resize(patch, (width, height), interpolation=cv2.INTER_AREA)


def check_trivial(model: nn.Module, slide: Path, out: Path) -> None:
    """The written raster equals sigmoid(conv) of the slide on a few tissue pixels (uint8 rounding)."""
    array = zarr.open_array(str(out / "bench" / "mask.zarr"), mode="r")
    with Slide.open(slide) as source:
        y, x = source.height // 8 + 100, source.width // 8 + 100
        image = source.read(x, y, 64, 64, 1.0)
    with torch.no_grad():
        logits = model(torch.from_numpy(image.transpose(2, 0, 1).copy())[None].to(DEVICE))["mask"]
    expected = np.round(torch.sigmoid(logits)[0, 0].cpu().numpy() * 255)
    got = array[y : y + 64, x : x + 64].astype(np.float64)
    if np.abs(got - expected).max() > 1:
        raise SystemExit("the engine's raster does not match the model on the slide: refusing to report speeds")


def bench_settings(
    args: argparse.Namespace,
    threads: int,
    context: int,
    workers: int | None = None,
    finishers: int | None = None,
    cache_mb: float | None = None,
) -> WSISettings:
    """0.5 um/px, 256 px tiles, 1024 px chunks (64 px margins where a task has instances)."""
    return WSISettings(
        tile_cache_mb=WSISettings.tile_cache_mb if cache_mb is None else cache_mb,
        mpp=0.5,
        tile=256,
        context=context,
        chunk=1024,
        margin=64,
        batch_size=args.batch_size[0],
        workers=args.workers[0] if workers is None else workers,
        threads=threads or None,
        writers=args.writers,
        finish_workers=finishers,
        amp=args.amp,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20_000)
    compared = functools.partial(parser.add_argument, nargs="+")  # settings to compare, one row (or run) each
    compared("--workers", type=int, default=[0], help="reading processes (0: a thread)")
    compared("--batch-size", type=int, default=[16], help="batch sizes")
    compared("--threads", type=int, default=[0], help="model CPU threads (0: default)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vismtl_bench")
    parser.add_argument("--histology-checkpoint", help="weights for the histology model (default: random)")
    parser.add_argument("--writers", type=int, help="chunk-finishing threads (default: the engine's)")
    compared("--finish-workers", type=int, default=[None], help="finishing processes (0: the writer threads)")
    compared("--tile-cache-mb", type=float, default=[None], help="tile cache budgets (0: margins computed again)")
    compared("--stitch-thread", choices=["on", "off"], default=["off"], help="stitching in a thread of its own")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    compared("--compile", choices=["off", "on"], default=["off"], help="torch.compile the model (wsi.compile)")
    compared("--cuda-graph", choices=["off", "on"], default=["off"], help="the model as a CUDA graph (wsi.cuda_graph)")
    compared("--decide-on-gpu", choices=["off", "on"], default=["off"], help="nuclei decided on the GPU")
    parser.add_argument("--repeats", type=int, default=3, help="trivial-model runs")
    parser.add_argument("--histology-repeats", type=int, default=1, help="histology-model runs (0: none)")
    parser.add_argument("--skip-histology", action="store_true")
    parser.add_argument("--skip-trivial", action="store_true", help="no reads alone, no trivial model")
    parser.add_argument(
        "--replay", action="store_true", help="also the histology tasks with the model's outputs replayed (Replayed)"
    )
    parser.add_argument(
        "--replay-behind", nargs="+", default=[], metavar="CONFIG", help="also replayed after CONFIG's model has run"
    )
    args = parser.parse_args()
    args.stitch_thread = [choice == "on" for choice in args.stitch_thread]
    args.compile = [choice == "on" for choice in args.compile]
    args.cuda_graph = [choice == "on" for choice in args.cuda_graph]
    args.decide_on_gpu = [choice == "on" for choice in args.decide_on_gpu]
    args.replay_behind = cost_configs(parser, args.replay_behind)
    args.cache.mkdir(parents=True, exist_ok=True)
    slide = make_slide(args.cache / f"tissue_{args.size}.tiff", args.size)
    print(
        f"device: {device_description()}, {len(os.sched_getaffinity(0))} cores; slide {args.size}x{args.size} "
        f"at 0.5 um/px, tiles 256x256; batch {args.batch_size}, amp {args.amp}"
    )
    if not args.skip_trivial:
        trivial(args, slide)
    if args.skip_histology:
        return
    histology_rows(args, slide)


def trivial(args: argparse.Namespace, slide: Path) -> None:
    """The reads alone, then the trivial model's rows."""
    reads = {fast: read_only(slide, bench_settings(args, 0, context=0), fast, args.repeats) for fast in (True, False)}
    for fast, (seconds, tiles) in reads.items():
        name = "tifffile (default)" if fast else "OpenSlide"
        print(f"reading alone, one process, {name}: {tiles * 256**2 / 1e6 / seconds:.1f} MP/s of tiles")
    for cv_threads in (cv2.getNumThreads(), 1):  # OpenCV's threads; 1: as beside a busy model thread
        cv2.setNumThreads(cv_threads)
        resampled = {
            former: read_only(slide, bench_settings(args, 0, context=0), True, args.repeats, 0.5 / 0.55, former)
            for former in (True, False)
        }
        (before, tiles), (after, _) = resampled[True], resampled[False]
        print(
            f"reading alone at 0.55 um/px (resampled), tifffile, {cv_threads} OpenCV threads: "
            f"{tiles * 256**2 / 1e6 / before:.1f} MP/s with one resize per region (before 2026-11-27), "
            f"{tiles * 256**2 / 1e6 / after:.1f} on the fixed grid ({before / after:.2f}x)"
        )
    cv2.setNumThreads(-1)  # OpenCV's default again
    print(HEADER)
    model = OneByOne()
    check = functools.partial(check_trivial, model, slide)
    compare(args, "trivial", model, build_tasks({"mask": dict(kind="saliency")}), slide, 0, args.repeats, check)


def histology_rows(args: argparse.Namespace, slide: Path) -> None:
    """The histology model alone, in the engine, and replayed."""
    if args.skip_trivial:
        print(HEADER)
    histology, tasks = quickstart_histology(args.histology_checkpoint)
    for batch in args.batch_size:
        alone = model_alone(histology, tasks, batch, args.amp)
        print(f"histology model alone (batch {batch} of 320 x 320, activations included): {alone:.1f} tiles/s")
    if args.histology_repeats:
        compare(args, "histology", histology, tasks, slide, 32, args.histology_repeats)
    if args.replay or args.replay_behind:
        outputs = real_outputs(histology, slide, args.size, 256 + 2 * 32)
    if args.replay:
        compare(args, "histology replayed", Replayed(outputs), tasks, slide, 32, args.histology_repeats or 1)
    for path, cost_cfg in args.replay_behind.items():
        cost, cost_tasks = cost_model(cost_cfg)
        for batch in args.batch_size:
            alone = model_alone(cost, cost_tasks, batch, args.amp)
            print(f"{Path(path).stem} alone (batch {batch} of 320 x 320, activations included): {alone:.1f} tiles/s")
        name = f"histology replayed behind {Path(path).stem}"
        compare(args, name, Replayed(outputs, cost), tasks, slide, 32, args.histology_repeats or 1)


def cost_configs(parser: argparse.ArgumentParser, paths: list[str]) -> dict:
    """``--replay-behind``'s configs, read before the slide is made: a typo fails at once, naming the file."""
    try:
        return {path: load_config(path, {"model.backbone.pretrained": False}) for path in paths}
    except ConfigError as err:
        parser.error(str(err))


def cost_model(cfg) -> tuple[nn.Module, dict]:
    """``cfg``'s model in eval mode, random weights (no download), and its tasks: what it costs."""
    tasks = build_tasks(cfg.tasks)
    return build_model(cfg.model, tasks).eval(), tasks


if __name__ == "__main__":
    main()
