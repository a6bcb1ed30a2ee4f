"""Several slide engines sharing one GPU: a batch of slides run by 1, 2, ... engine processes.

    python benchmarks/wsi_engines_per_gpu.py [--engines 1 2 3] [--slides 6] [--size 6000] [--repeats 2]
        [--batch-size 16] [--histology-checkpoint CKPT] [--replay-behind CONFIG]

On the H200 one engine process moved at most about 540 tiles/s (the histology quickstart's outputs
replayed: a model that costs nothing) while that model alone computes about 1,600, and the
process used about one core: its threads take turns at one GIL (docs/benchmarks.md, "GPU").
Processes do not share a GIL. ``torchrun --nproc_per_node=K tools/infer_wsi.py ... --launcher
pytorch`` starts K engines, which share a machine's GPUs in turn (``share_gpus`` of
:func:`vismtl.engine.distributed.init_distributed`) and its cores (each engine's defaults take
its share: ``LOCAL_WORLD_SIZE``), and take the batch's slides as each becomes free.

This runs a batch of ``--slides`` links to the generated bench slide of ``wsi_throughput.py``
(``--size`` px, ~10 % tissue, 0.5 um/px, 256 px tiles) with K engine processes on this machine's
device, for each K of ``--engines``. Each engine is a ``SlideRunner`` in a process of its own
with ``LOCAL_WORLD_SIZE=K`` set, as torchrun sets it; the engines take slides from one queue as
they become free, as the ranks' claims do. Every engine's reading and finishing processes are
up before the batch is timed (a real run pays their start once), and its batches start together
(a barrier). On the CPU every engine of every row gets the cores of the most engines' share as
PyTorch threads (a CPU model's rounding changes with its threads), so fewer engines leave cores
idle there: a CPU's figures check the script and the outputs, they say nothing of a GPU's.

Printed per K (medians of ``--repeats`` batches): the batch's wall seconds, tiles/s, the ratio
to the first K's, and on a GPU the model's share: the tiles over what the model alone computes
in the batch's time (its rate measured here first, on random batches laid out as the engine
feeds them), i.e. the GPU's share of the batch that the model's work fills, however the
engines' calls interleave (the CPU's engines split its cores: no share there). Before the
table, every K's outputs of the first slide (GeoJSON text, rasters) are checked equal to the
first K's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_description, quickstart_histology  # noqa: E402
from vismtl.config import load_config  # noqa: E402
from vismtl.wsi import SlideRunner, WSISettings  # noqa: E402
from vismtl.wsi.inputs import SlideInput  # noqa: E402
from wsi_batch import linked_slides, same_outputs  # noqa: E402
from wsi_throughput import (  # noqa: E402
    DEVICE,
    Replayed,
    cost_configs,
    cost_model,
    make_slide,
    model_alone,
    real_outputs,
)


def bench_model(args: argparse.Namespace, source: Path):
    """The histology quickstart, or its outputs replayed behind ``--replay-behind``'s model; its tasks."""
    torch.manual_seed(0)  # random weights (no checkpoint) the same in every engine process
    model, tasks = quickstart_histology(args.histology_checkpoint)
    if args.replay_behind:
        cfg = load_config(args.replay_behind[0], {"model.backbone.pretrained": False})
        model = Replayed(real_outputs(model, source, args.size, 256 + 2 * 32), cost_model(cfg)[0])
    return model.eval().to(DEVICE), tasks


def engine_settings(args: argparse.Namespace, engines: int) -> WSISettings:
    """The engine's defaults for its share of the machine; on the CPU the share of the most engines as
    PyTorch threads in every row, so that the rows compute the same floats (a CPU model's rounding
    changes with its threads)."""
    threads = max(1, len(os.sched_getaffinity(0)) // max(args.engines)) if DEVICE.type == "cpu" else None
    return WSISettings(
        mpp=0.5, tile=256, context=32, chunk=1024, margin=64, batch_size=args.batch_size, amp=args.amp, threads=threads
    )


def engine(engines: int, args: argparse.Namespace, source: Path, slides, out: Path, queue, barrier, results) -> None:
    """One engine process: ``--repeats`` batches of the slides it takes from ``queue`` (None: the batch's end)."""
    os.environ["LOCAL_WORLD_SIZE"] = str(engines)  # as torchrun sets it: the defaults take this process's share
    model, tasks = bench_model(args, source)
    settings = engine_settings(args, engines)
    with SlideRunner(model, tasks, settings, DEVICE) as runner:
        runner.wait_ready()
        for repeat in range(args.repeats):
            taken = (slides[k] for k in iter(queue.get, None))
            barrier.wait()
            started = time.monotonic()
            entries = list(runner.run_many(taken, out / f"repeat{repeat}", resume=False))
            failed = [e for e in entries if e["status"] != "done"]
            results.put((repeat, started, time.monotonic(), len(entries), failed))


def run_engines(engines: int, args: argparse.Namespace, source: Path, slides: list[SlideInput], out: Path) -> list:
    """The batch ``--repeats`` times with ``engines`` processes: per repeat ``(wall s, tiles)``."""
    context = multiprocessing.get_context("spawn")
    queue, results, barrier = context.Queue(), context.Queue(), context.Barrier(engines)
    for _ in range(args.repeats):
        for k in range(len(slides)):
            queue.put(k)
        for _ in range(engines):
            queue.put(None)
    processes = [
        context.Process(target=engine, args=(engines, args, source, slides, out, queue, barrier, results))
        for _ in range(engines)
    ]
    for process in processes:
        process.start()
    try:
        reports = [_report(results, processes) for _ in range(engines * args.repeats)]
    except BaseException:  # an engine that failed leaves the others waiting at the barrier: end them
        for process in processes:
            process.kill()
        raise
    for process in processes:
        process.join()
    batches = []
    for repeat in range(args.repeats):
        mine = [r for r in reports if r[0] == repeat]
        failed = [f for r in mine for f in r[4]]
        if failed or sum(r[3] for r in mine) != len(slides):
            raise SystemExit(f"{engines} engines: slides failed or were not all run: {failed}")
        tiles = sum(_tiles(out / f"repeat{repeat}" / slide.name) for slide in slides)
        batches.append((max(r[2] for r in mine) - min(r[1] for r in mine), tiles))
    return batches


def _report(results, processes) -> tuple:
    """The next engine's report; an engine that died ends the benchmark at once (a GPU's time is short)."""
    while True:
        try:
            return results.get(timeout=5)
        except Empty:
            if any(process.exitcode for process in processes):
                raise SystemExit("an engine process failed (its traceback is above)") from None


def _tiles(folder: Path) -> int:
    return json.loads((folder / "summary.json").read_text())["tiles"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, nargs="+", default=[1, 2], help="engine processes, one row each")
    parser.add_argument("--slides", type=int, default=6, help="slides in the batch")
    parser.add_argument("--size", type=int, default=6000, help="side of the generated bench slide")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--histology-checkpoint", help="weights for the histology model (default: random)")
    parser.add_argument(
        "--replay-behind", nargs=1, default=[], metavar="CONFIG", help="the outputs replayed behind CONFIG's model"
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vismtl_bench")
    args = parser.parse_args()
    cost_configs(parser, args.replay_behind)  # a typo fails here, naming the file
    args.cache.mkdir(parents=True, exist_ok=True)
    source = make_slide(args.cache / f"tissue_{args.size}.tiff", args.size)
    work = Path(tempfile.mkdtemp(prefix="wsi_engines_", dir=args.cache))
    try:
        slides = linked_slides(source, work, args.slides)
        model, tasks = bench_model(args, source)
        alone = model_alone(model, tasks, args.batch_size, args.amp, as_fed=True)
        del model
        torch.cuda.empty_cache()
        label = f"replayed behind {Path(args.replay_behind[0]).stem}" if args.replay_behind else "histology"
        print(
            f"device: {device_description()}, {len(os.sched_getaffinity(0))} cores; {args.slides} slides of "
            f"{args.size} x {args.size} px; {label}; batch {args.batch_size}; amp {args.amp}; torch {torch.__version__}"
        )
        print(f"the model alone (batch {args.batch_size} of 320 x 320 channels-last, activations): {alone:.1f} tiles/s")
        rows = {}
        for engines in args.engines:
            out = work / f"engines{engines}"
            rows[engines] = run_engines(engines, args, source, slides, out)
            print(f"  {engines} engines: {[f'{wall:.2f} s' for wall, _ in rows[engines]]}", file=sys.stderr, flush=True)
            first = work / f"engines{args.engines[0]}" / "repeat0"
            same_outputs(first, out / "repeat0", slides[:1], tasks)
            for repeat in range(1, args.repeats):
                shutil.rmtree(out / f"repeat{repeat}")
        print(
            f"{'engines':>7s} {'readers':>7s} {'finishers':>9s} {'batch s':>8s} {'tiles':>6s} {'tiles/s':>8s} "
            f"{'ratio':>6s} {'model share':>11s}\n(medians; readers and finishers: each engine's processes; "
            "model share: the tiles over what the model alone computes in the batch's time)"
        )
        base = statistics.median(wall for wall, _ in rows[args.engines[0]])
        for engines, batches in rows.items():
            wall = statistics.median(w for w, _ in batches)
            tiles = batches[0][1]
            os.environ["LOCAL_WORLD_SIZE"] = str(engines)
            settings = engine_settings(args, engines)
            readers = settings.reading_workers(DEVICE.type)
            finishers = settings.finishing_processes(DEVICE.type, instances=True)
            share = f"{100 * tiles / alone / wall:10.1f}%" if DEVICE.type == "cuda" else f"{'-':>11s}"
            print(
                f"{engines:7d} {readers:7d} {finishers:9d} {wall:8.2f} {tiles:6d} {tiles / wall:8.1f} "
                f"{base / wall:5.2f}x {share}"
            )
    finally:
        os.environ.pop("LOCAL_WORLD_SIZE", None)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
