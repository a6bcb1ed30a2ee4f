"""What ``--amp`` (bfloat16 autocast) changes in whole-slide inference: the time and the outputs.

    python benchmarks/wsi_precision.py [--histology-checkpoint CKPT] [--slides SLIDE ...] [--size 20000] [--compile]

The histology quickstart model runs over each slide twice with the same engine settings as
``wsi_throughput.py`` (0.5 um/px, 256 px tiles, 32 px context, 1024 px chunks): in float32,
then under bfloat16 autocast (with ``--compile``, also through ``torch.compile``). Printed per
slide: the pipeline's seconds and their ratio, how busy the model was, and how far the bfloat16
outputs are from the float32 ones:

- instance tasks: the objects of each GeoJSON, matched one to one at IoU >= 0.5 (objects of
  one run do not overlap, so a match is unique): counts, F1 of the matching and mean IoU of
  the matched pairs;
- label rasters (types): the share of pixels, among those either run labels, that get the
  same label; instance rasters (object probability, uint8): the mean absolute difference
  over the pixels either run marks, in levels of 255;
- tissue-class proportions: the largest difference.

CPUs with AVX-512 BF16 or AMX run bfloat16 convolutions natively; elsewhere autocast may be
slower than float32. Default slide: the generated 20,000 x 20,000 bench slide of
``wsi_throughput.py`` (cached in --cache); ``--slides`` adds real ones, e.g.
``../shared/data/slides/cmu-1-small-region.svs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import shapely
import zarr
from shapely.geometry import shape

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_description, quickstart_histology  # noqa: E402
from vismtl.wsi import SlideRunner  # noqa: E402
from vismtl.wsi.inputs import SlideInput  # noqa: E402
from wsi_throughput import DEVICE, ROOT, bench_settings, make_slide  # noqa: E402

QUICKSTART_CHECKPOINT = ROOT / "work_dirs" / "quickstart_tissue" / "checkpoints" / "latest.pth"


def polygons(path: Path) -> list:
    """The polygons of a GeoJSON FeatureCollection (level-0 pixels)."""
    if not path.is_file():
        return []
    return [shape(feature["geometry"]) for feature in json.loads(path.read_text())["features"]]


def matched(first: list, second: list, threshold: float = 0.5) -> tuple[int, float]:
    """Pairs of ``first`` and ``second`` with IoU >= ``threshold`` and their mean IoU."""
    if not first or not second:
        return 0, float("nan")
    tree = shapely.STRtree(second)
    ious = []
    for polygon in first:
        best = 0.0
        for index in tree.query(polygon):
            other = second[index]
            union = polygon.union(other).area
            best = max(best, polygon.intersection(other).area / union if union else 0.0)
        if best >= threshold:
            ious.append(best)
    return len(ious), float(np.mean(ious)) if ious else float("nan")


def raster_difference(first: Path, second: Path, labels: bool) -> float:
    """Labels: the share of pixels labelled by either raster with the same label (%);
    probabilities: the mean absolute difference over the pixels either marks (levels of 255)."""
    a, b = zarr.open_array(first, mode="r"), zarr.open_array(second, mode="r")
    step = a.chunks[0]
    total = same = 0
    difference = 0.0
    for y in range(0, a.shape[0], step):  # chunk rows: the arrays are never held whole
        rows_a, rows_b = a[y : y + step], b[y : y + step]
        marked = (rows_a > 0) | (rows_b > 0)
        if rows_a.ndim == 3:  # colour-coded rasters: a pixel is marked when any channel is
            marked = marked.any(axis=-1)
        total += int(marked.sum())
        if labels:
            equal = (rows_a == rows_b).all(axis=-1) if rows_a.ndim == 3 else rows_a == rows_b
            same += int((equal & marked).sum())
        else:
            difference += float(np.abs(rows_a.astype(np.int16) - rows_b.astype(np.int16))[marked].sum())
    if not total:
        return float("nan")
    return 100.0 * same / total if labels else difference / total


def run_slide(runner: SlideRunner, slide: Path, out: Path) -> dict:
    entry = runner.run(SlideInput(slide, "slide"), out, resume=False)
    if entry["status"] != "done":
        raise SystemExit(f"the run over {slide} failed: {entry}")
    return json.loads((out / "slide" / "summary.json").read_text())


def compare(tasks, summaries: dict[str, dict], folders: dict[str, Path]) -> list[str]:
    """Lines of the float32 -> bfloat16 differences of one slide."""
    (base, low), (fp32, bf16) = summaries.values(), folders.values()
    lines = []
    for name, task in tasks.items():
        if task.kind == "instance":
            first, second = polygons(fp32 / f"{name}.geojson"), polygons(bf16 / f"{name}.geojson")
            pairs, iou = matched(first, second)
            found = f"objects {len(first)} -> {len(second)}"
            if first or second:
                f1 = 2 * pairs / (len(first) + len(second))
                found += f", matched {pairs} (F1 {100 * f1:.2f} %, mean IoU {iou:.3f})"
            probability = raster_difference(fp32 / f"{name}.zarr", bf16 / f"{name}.zarr", labels=False)
            lines.append(f"| {name} | {found}; probability raster: mean abs. difference {probability:.2f} / 255 |")
        elif task.dense:
            agree = raster_difference(fp32 / f"{name}.zarr", bf16 / f"{name}.zarr", labels=True)
            agreed = "no labelled pixels" if np.isnan(agree) else f"same label on {agree:.2f} % of the labelled pixels"
            lines.append(f"| {name} | {agreed} |")
    for name, shares in base["tissue_classes"].items():
        gap = max(abs(share - low["tissue_classes"][name][cls]) for cls, share in shares.items())
        lines.append(f"| {name} | tissue-class proportions differ by at most {100 * gap:.2f} points |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--histology-checkpoint", type=Path, default=QUICKSTART_CHECKPOINT)
    parser.add_argument("--slides", type=Path, nargs="*", default=[], help="real slides to add")
    parser.add_argument("--size", type=int, default=20_000, help="side of the generated bench slide (0: none)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vismtl_bench")
    parser.add_argument("--compile", action="store_true", help="the bfloat16 run through torch.compile too")
    args = parser.parse_args()
    if not args.histology_checkpoint.is_file():
        parser.error(
            f"no checkpoint at {args.histology_checkpoint}: train the quickstart first "
            "(python tools/train.py configs/cerberus/quickstart_tissue.py) or pass --histology-checkpoint"
        )
    missing = [str(path) for path in args.slides if not path.is_file()]
    if missing:
        parser.error(f"no such slide: {', '.join(missing)}")
    args.cache.mkdir(parents=True, exist_ok=True)
    slides = ([make_slide(args.cache / f"tissue_{args.size}.tiff", args.size)] if args.size else []) + args.slides

    model, tasks = quickstart_histology(args.histology_checkpoint)
    options = argparse.Namespace(batch_size=[16], workers=[0], writers=None, amp=False)
    settings = bench_settings(options, threads=0, context=32)
    print(f"device: {device_description()}; histology quickstart, {args.histology_checkpoint}")
    for slide in slides:
        out = Path(tempfile.mkdtemp(prefix="wsi_precision_", dir=args.cache))
        summaries, folders = {}, {}
        try:
            reduced = "bfloat16 autocast, compiled" if args.compile else "bfloat16 autocast"
            for precision, amp in (("float32", False), (reduced, True)):
                variant = dataclasses.replace(settings, amp=amp, compile=amp and args.compile)
                with SlideRunner(model.to(DEVICE), tasks, variant, DEVICE) as runner:
                    started = time.perf_counter()
                    summaries[precision] = run_slide(runner, slide, out / precision)
                    seconds = time.perf_counter() - started
                folders[precision] = out / precision / "slide"
                timings = summaries[precision]["timings"]
                print(f"  {slide.name}, {precision}: {timings} ({seconds:.1f} s)", file=sys.stderr, flush=True)
            base, low = (summaries[p]["timings"] for p in summaries)
            tiles = summaries["float32"]["tiles"]
            print(f"\n{slide.name}: {tiles} model tiles")
            print("| precision | pipeline s | tiles/s | busy | vs float32 |")
            print("|---|---|---|---|---|")
            for precision, timings in zip(summaries, (base, low)):
                busy = 100 * timings["model_s"] / timings["tiles_s"]
                ratio = base["tiles_s"] / timings["tiles_s"]
                print(
                    f"| {precision} | {timings['tiles_s']:.2f} | {tiles / timings['tiles_s']:.1f} | "
                    f"{busy:.1f} % | {ratio:.2f}x |"
                )
            print("\n| task | bfloat16 against float32 |\n|---|---|")
            print("\n".join(compare(tasks, summaries, folders)))
        finally:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
