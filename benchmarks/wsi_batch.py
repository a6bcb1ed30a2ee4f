"""A batch of slides: one after the other against overlapped (the next slide prepared and the last one
concluded while a slide's tiles run).

    python benchmarks/wsi_batch.py [--slides 6] [--size 6000] [--repeats 3] [--workers N] [--batch-size 16]
        [--amp] [--histology-checkpoint CKPT] [--skip-histology] [--skip-trivial] [--replay-behind CONFIG]

The batch is ``--slides`` links to the generated bench slide of ``wsi_throughput.py`` at ``--size``
pixels (6,000: 71 tiles at 0.5 um/px in 256 px tiles, ~10 % tissue), each under its own name.
Two ways to run it on one engine (``SlideRunner``), alternating, medians of ``--repeats``:

- one after the other: ``SlideRunner.run`` per slide (what ``tools/infer_wsi.py`` did until
  2026-11-27): each slide is opened, masked and planned, its tiles run, then its last chunks are
  waited for, its GeoJSON put together and its pictures written, and only then the next one;
- overlapped: ``SlideRunner.run_many`` (what it does now).

For the trivial model (one 1x1 convolution: the engine's own work, as beside a GPU model that
costs little) and, unless ``--skip-histology``, the histology quickstart model (random weights
unless a checkpoint is given); with ``--replay-behind CONFIG``, also the histology model's outputs
replayed behind CONFIG's model (random weights): a model of that cost under the histology
post-processing, as ``wsi_throughput.py --replay-behind`` but over a batch, whose slides' starts
and tails overlap their neighbours'. Printed: the batch's seconds and slides/s, the ratio to one after
the other, the model's busy share of the batch (its seconds over the batch's), and per slide
(medians) the phases outside the model's thread: prepare, drain (the last chunks after the
last batch) and conclude. The first overlapped batch's outputs are checked equal to the first
batch's one after the other (GeoJSON text and rasters) before anything is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_description, quickstart_histology  # noqa: E402
from vismtl.tasks import build_tasks  # noqa: E402
from vismtl.wsi import SlideRunner, WSISettings  # noqa: E402
from vismtl.wsi.inputs import SlideInput  # noqa: E402
from wsi_throughput import DEVICE, OneByOne, Replayed, cost_configs, cost_model, make_slide, real_outputs  # noqa: E402

MODES = ("one after the other", "overlapped")


def linked_slides(source: Path, folder: Path, count: int) -> list[SlideInput]:
    """``count`` links to ``source`` in ``folder``, each a slide of its own name: the same work per slide."""
    slides = []
    for k in range(count):
        (folder / f"slide{k}.tiff").symlink_to(source)
        slides.append(SlideInput(folder / f"slide{k}.tiff", f"slide{k}"))
    return slides


def run_batch(runner: SlideRunner, slides: list[SlideInput], out: Path, overlapped: bool) -> dict:
    """The batch's wall seconds and its slides' summaries' timings."""
    started = time.perf_counter()
    if overlapped:
        entries = list(runner.run_many(slides, out, resume=False))
    else:
        entries = [runner.run(slide, out, resume=False) for slide in slides]
    wall = time.perf_counter() - started
    failed = [e for e in entries if e["status"] != "done"]
    if failed:
        raise SystemExit(f"a slide failed: {failed[0]}")
    timings = [json.loads((out / s.name / "summary.json").read_text())["timings"] for s in slides]
    return {"wall": wall, "timings": timings}


def same_outputs(first: Path, second: Path, slides: list[SlideInput], tasks) -> None:
    """The two runs' GeoJSON texts and rasters are equal (else the benchmark stops)."""
    for slide in slides:
        for path in sorted((first / slide.name).glob("*.geojson")):
            if path.read_text() != (second / slide.name / path.name).read_text():
                raise SystemExit(f"{slide.name}: {path.name} differs between the two ways")
        for name, task in tasks.items():
            if task.dense:
                a = zarr.open_array(str(first / slide.name / f"{name}.zarr"), mode="r")[:]
                b = zarr.open_array(str(second / slide.name / f"{name}.zarr"), mode="r")[:]
                if not np.array_equal(a, b):
                    raise SystemExit(f"{slide.name}: the {name} raster differs between the two ways")


def compare(label: str, model, tasks, settings: WSISettings, slides: list[SlideInput], args) -> None:
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with SlideRunner(model.to(DEVICE), tasks, settings, DEVICE) as runner:
        runner.wait_ready()  # as for a batch's slides after the first
        for repeat in range(args.repeats):
            outs = {}
            for mode in MODES if repeat % 2 == 0 else MODES[::-1]:
                outs[mode] = Path(tempfile.mkdtemp(prefix="wsi_batch_", dir=args.cache))
                runs[mode].append(run_batch(runner, slides, outs[mode], mode == "overlapped"))
                print(f"  {label}, {mode}: {runs[mode][-1]['wall']:.2f} s", file=sys.stderr, flush=True)
            if repeat == 0:
                same_outputs(outs[MODES[0]], outs[MODES[1]], slides, tasks)
            for out in outs.values():
                shutil.rmtree(out)
    base = statistics.median(r["wall"] for r in runs[MODES[0]])
    for mode in MODES:
        wall = statistics.median(r["wall"] for r in runs[mode])
        busy, gaps, late = (
            statistics.median(sum(t[key] for t in r["timings"]) / r["wall"] for r in runs[mode])
            for key in ("model_s", "gap_s", "gap_late_s")
        )
        phases = [
            statistics.median(t[key] for r in runs[mode] for t in r["timings"])
            for key in ("prepare_s", "drain_s", "conclude_s")
        ]
        print(
            f"{label + ', ' + mode:60s} {len(slides):>6d} {wall:9.2f} {len(slides) / wall:9.2f} {base / wall:7.2f}x "
            f"{100 * busy:7.1f}% {100 * gaps:7.1f}% {100 * late:7.1f}% {phases[0]:9.3f} {phases[1]:9.3f} "
            f"{phases[2]:9.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=6, help="slides in the batch")
    parser.add_argument("--size", type=int, default=6000, help="side of the generated bench slide")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, help="reading processes (default: the engine's)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--histology-checkpoint", help="weights for the histology model (default: random)")
    parser.add_argument("--skip-histology", action="store_true")
    parser.add_argument("--skip-trivial", action="store_true")
    parser.add_argument(
        "--replay-behind", nargs="+", default=[], metavar="CONFIG", help="histology replayed behind CONFIG's model"
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vismtl_bench")
    args = parser.parse_args()
    args.replay_behind = cost_configs(parser, args.replay_behind)
    args.cache.mkdir(parents=True, exist_ok=True)
    source = make_slide(args.cache / f"tissue_{args.size}.tiff", args.size)
    links = Path(tempfile.mkdtemp(prefix="wsi_batch_slides_", dir=args.cache))
    slides = linked_slides(source, links, args.slides)
    common = dict(mpp=0.5, tile=256, chunk=1024, margin=64, workers=args.workers, amp=args.amp)
    common.update(batch_size=args.batch_size)
    print(
        f"device: {device_description()}; {args.slides} slides of {args.size} x {args.size} px, tiles 256 px at "
        f"0.5 um/px; batch {args.batch_size}; amp {args.amp}; torch {torch.__version__}"
    )
    print(
        f"{'model, batch':60s} {'slides':>6s} {'batch s':>9s} {'slides/s':>9s} {'ratio':>8s} {'busy':>8s} "
        f"{'gaps':>8s} {'late':>8s} {'prepare s':>9s} {'drain s':>9s} {'conclude s':>9s}\n"
        "(medians; busy: the model's seconds over the batch's; gaps: the model idle between batches within "
        "its slides, late: of which its thread came late (ModelClock.gaps); prepare, drain, conclude: per slide)"
    )
    try:
        if not args.skip_trivial:
            trivial_tasks = build_tasks({"mask": dict(kind="saliency")})
            compare("trivial", OneByOne(), trivial_tasks, WSISettings(context=0, **common), slides, args)
        if args.skip_histology and not args.replay_behind:
            return
        model, tasks = quickstart_histology(args.histology_checkpoint)
        histology = WSISettings(context=32, **common)
        if not args.skip_histology:
            compare("histology", model, tasks, histology, slides, args)
        if args.replay_behind:
            outputs = real_outputs(model, source, args.size, 256 + 2 * 32)
        for path, cfg in args.replay_behind.items():
            replayed = Replayed(outputs, cost_model(cfg)[0])
            compare(f"replayed behind {Path(path).stem}", replayed, tasks, histology, slides, args)
    finally:
        shutil.rmtree(links)


if __name__ == "__main__":
    main()
