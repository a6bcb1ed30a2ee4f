"""Objects larger than the chunk margin: does every one come out once and whole, and what does
putting them together from the chunks' pieces cost?

    python benchmarks/wsi_large_objects.py [--size 4096] [--count 120] [--margin 64] [--nuclei 0]

Glands at 0.5 um/px span hundreds of pixels, the engine's default margin is 64. A generated
label slide (lossless, ``tests/wsi_helpers.py``) holds ``--count`` gland-like ellipses with
semi-axes of 20 to 250 px, 8 px apart, a third of them centred on chunk borders; an oracle model
"predicts" the 3-class map the slide encodes (so the only errors are the engine's), and the
gland task's post-processing (seeds grown by the band, holes filled) decides the objects. The
engine runs with its defaults (1024 px chunks, 256 px tiles, ``--margin``). Printed: how many
true objects cross a chunk border and how many are larger than the margin; the GeoJSON against
the truth (objects one to one at IoU >= 0.5, detection and segmentation quality, PQ); and the
slide's timings from ``summary.json``, with the seconds spent putting the pieces together
(timed around ``assemble``). ``--nuclei N`` runs N nucleus-size ellipses (semi-axes 6-16 px)
with the nuclei's watershed instead: many small objects cross the chunk borders, which
measures the cost per object put together. With ``PYTHONPATH`` set to a tree from before
pieces (ba23e63), the same script measures the engine that kept the part of a cut object its
owner chunk saw.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage.draw import polygon

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import vismtl.wsi.engine as engine  # noqa: E402
from vismtl.tasks import build_tasks  # noqa: E402
from vismtl.tasks import instance_metrics as im  # noqa: E402
from vismtl.wsi import SlideRunner, WSISettings  # noqa: E402
from vismtl.wsi.inputs import SlideInput  # noqa: E402
from wsi_helpers import GreyOracle, ellipses, write_label_slide  # noqa: E402


def rasterised(features: list, shape: tuple[int, int]) -> np.ndarray:
    """The GeoJSON's objects painted into one label image: the pixels whose centre lies inside."""
    out = np.zeros(shape, np.int32)
    for k, feature in enumerate(features, start=1):
        ring = np.asarray(feature["geometry"]["coordinates"][0], np.float64)
        rows, cols = polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape)  # vertices are pixel corners
        out[rows, cols] = k
    return out


def crossing_counts(labels: np.ndarray, chunk: int, margin: int) -> tuple[int, int]:
    """True objects crossing a chunk border, and those among them larger than the margin (reaching
    beyond the margin of a chunk whose core they touch)."""
    crossing = larger = 0
    for ys, xs in (box for box in ndimage.find_objects(labels) if box):
        cores = {(y // chunk, x // chunk) for y in (ys.start, ys.stop - 1) for x in (xs.start, xs.stop - 1)}
        crossing += len(cores) > 1
        reach = max(ys.stop - ys.start, xs.stop - xs.start)
        larger += len(cores) > 1 and reach > margin
    return crossing, larger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--margin", type=int, default=64)
    parser.add_argument("--nuclei", type=int, default=0, help="nucleus-size objects instead of glands")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.nuclei:
        truth, name = ellipses(args.size, args.size, args.nuclei, seed=0, borders=1024), "nuclei"
        task = dict(kind="instance", band=3, postprocess="watershed", min_size=10)
    else:
        truth, name = ellipses(args.size, args.size, args.count, 0, 1024, axes=(20, 251), gap=8), "gland"
        task = dict(kind="instance", band=3, postprocess="interior_minus_contour", min_size=30)
    crossing, larger = crossing_counts(truth, 1024, args.margin)
    print(
        f"{truth.max()} true objects on {args.size} x {args.size} px; {crossing} cross a chunk border, "
        f"{larger} of them larger than the {args.margin} px margin"
    )
    tasks = build_tasks({name: task})
    settings = WSISettings(margin=args.margin, workers=0, tissue="all")
    seconds, assembled = [0.0], [0]
    real_assemble = getattr(engine, "assemble", None)  # None: an engine before pieces (PYTHONPATH=older tree)

    def timed_assemble(*a, **k):
        started = time.perf_counter()
        try:
            result = real_assemble(*a, **k)
            assembled.append(len(result.instances))
            return result
        finally:
            seconds.append(time.perf_counter() - started)

    if real_assemble is not None:
        engine.assemble = timed_assemble
    with tempfile.TemporaryDirectory() as tmp:
        slide = write_label_slide(Path(tmp) / "glands.tiff", truth)
        with SlideRunner(GreyOracle(name), tasks, settings, torch.device("cpu")) as runner:
            entry = runner.run(SlideInput(slide, "glands"), Path(tmp) / "out", resume=False)
        assert entry["status"] == "done", entry
        folder = Path(tmp) / "out" / "glands"
        features = json.loads((folder / f"{name}.geojson").read_text())["features"]
        summary = json.loads((folder / "summary.json").read_text())
    quality = im.pq_from_stats(im.pq_stats(im.instance_overlap(truth, rasterised(features, truth.shape))))
    print(
        f"GeoJSON: {len(features)} objects; matched at IoU >= 0.5: DQ {quality['dq']:.4f}, SQ {quality['sq']:.4f}, "
        f"PQ {quality['pq']:.4f}; objects larger than the margin (summary): {summary['cut_objects']}"
    )
    timings = summary["timings"]
    print(
        f"slide {timings['wall_s']:.2f} s (tiles {timings['tiles_s']:.2f} s, conclude {timings['conclude_s']:.3f} s); "
        f"putting {sum(assembled)} objects together from pieces: {sum(seconds):.3f} s "
        f"({sum(seconds) / max(sum(assembled), 1) * 1e3:.3f} ms per object)"
    )


if __name__ == "__main__":
    main()
