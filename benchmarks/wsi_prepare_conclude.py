"""A slide prepared and concluded beside another's model: in the engine's process or a finishing process.

    python benchmarks/wsi_prepare_conclude.py [--size 20000] [--repeats 5] [--histology-checkpoint CKPT]

In a batch (``SlideRunner.run_many``) the next slide is prepared (opened, its tissue mask and
plan made, its arrays created) and the last one concluded (its GeoJSON put together from the
chunks' part files, its thumbnail drawn from its raster, its patch-class maps and summary
written) while a slide's tiles run. On a GPU the model's thread then launches kernels, each
launch needing the GIL of the engine's process (``benchmarks/gil_convoy.py``). This runs the
histology quickstart's outputs, replayed (``wsi_throughput.py --replay``: the real
post-processing at no model cost), over the generated bench slide with one finishing process,
preparing it, running its tiles and waiting for its last chunks, then concluding it; it times
the preparation and the conclusion two ways, alternating:

- in a thread of the engine's process (what ``run_many`` did until 2026-11-28, and still does
  without finishing processes: the CPU default);
- in a finishing process (``ChunkFinisher.call``: what it does now when there are finishing
  processes, a GPU's default).

Meanwhile the main thread runs the quickstart model on one 16 px tile over and over
(``wsi_transfer.py``'s stand-in for a GPU model's launches: ops of microseconds). "lost s": the
seconds its forwards took during the phase beyond what they take alone (measured in each repeat
too, 0.5 s with nothing beside them: the machine's speed drifts); "forwards/s": how many it
completed per second meanwhile. Medians of ``--repeats``. The two ways' outputs (GeoJSON
text, summary but its timings) are checked equal first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_description, quickstart_histology  # noqa: E402
from vismtl.wsi import SlideRunner, WSISettings  # noqa: E402
from vismtl.wsi.conclusion import conclude_slide  # noqa: E402
from vismtl.wsi.engine import SlideJob  # noqa: E402
from vismtl.wsi.inputs import SlideInput  # noqa: E402
from vismtl.wsi.preparation import prepare_slide  # noqa: E402
from wsi_throughput import Replayed, make_slide, real_outputs  # noqa: E402
from wsi_transfer import Launches, timed_pass  # noqa: E402

WAYS = ("in the engine's process (a thread)", "in a finishing process")
PHASES = ("prepared", "concluded")


def ran_slide(runner: SlideRunner, slide: Path, out: Path, way: str, launches: Launches) -> tuple[SlideJob, tuple]:
    """A job prepared ``way`` whose tiles have run and whose last chunks are written, ready to be
    concluded, and its preparation's :func:`timed_pass` figures beside ``launches`` (the call
    ``SlideRunner._prepare`` makes; its reading, started next, is the same either way)."""
    job = SlideJob(SlideInput(slide, "bench"), out)
    made = {}

    def prepare() -> None:
        args = (runner._setup, job.input, job.folder, False, None)
        made["state"] = runner.finisher.call("preparing the bench slide", prepare_slide, *args, here=way == WAYS[0])

    prepared = timed_pass(prepare, launches)
    job.state, job.seconds["prepare_s"] = made["state"], prepared[1]
    job.reading = runner._start_reading(job)
    runner._tiles(job)
    writes, job.writes = job.writes, None
    writes()
    job.busy["drain_s"] = 0.0
    return job, prepared


def conclude(runner: SlideRunner, job: SlideJob, way: str) -> None:
    end = runner._slide_end(job)
    if way == WAYS[0]:
        conclude_slide(runner.tasks, end)
    else:
        runner.finisher.call("concluding the bench slide", conclude_slide, end)


def outputs_of(folder: Path) -> tuple[str, dict]:
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("timings")
    return (folder / "nuclei.geojson").read_text(), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--histology-checkpoint", default=None)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vismtl_bench")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    slide = make_slide(args.cache / f"tissue_{args.size}.tiff", args.size)  # wsi_throughput.py's
    model, tasks = quickstart_histology(args.histology_checkpoint)
    replayed = Replayed(real_outputs(model, slide, args.size, 320))
    settings = WSISettings(mpp=0.5, tile=256, context=32, chunk=1024, margin=64, finish_workers=1)
    launches = Launches()
    torch.set_num_threads(1)  # the launching thread's ops of microseconds; the engine's as on a GPU
    runs: dict[tuple[str, str], list] = {(phase, way): [] for phase in PHASES for way in WAYS}
    with (
        tempfile.TemporaryDirectory(dir=args.cache) as scratch,
        SlideRunner(replayed, tasks, settings, torch.device("cpu")) as runner,
    ):
        runner.wait_ready()
        seen, quiet = {}, []
        for repeat in range(args.repeats + 1):  # the first: untimed, and the ways' outputs compared
            for way in WAYS:
                out = Path(scratch) / f"{repeat}_{WAYS.index(way)}"
                job, prepared = ran_slide(runner, slide, out, way, launches)
                if repeat:
                    runs["prepared", way].append(prepared)
                    runs["concluded", way].append(timed_pass(conclude, launches, runner, job, way))
                else:
                    conclude(runner, job, way)
                    seen[way] = outputs_of(out / "bench")
            if not repeat:
                assert seen[WAYS[0]] == seen[WAYS[1]], "the two ways wrote different outputs"
            else:  # the forwards with nothing beside them, in the same minutes (the machine's speed drifts)
                quiet.append(timed_pass(time.sleep, launches, 0.5)[2])
    alone = statistics.median(statistics.median(forwards) for forwards in quiet)
    objects = len(json.loads(seen[WAYS[0]][0])["features"])
    print(f"device: {device_description()}; the {args.size:,} px bench slide, {objects:,} nuclei")
    print(f"medians of {args.repeats}, the two ways alternating")
    print(f"the model's forward on one 16 px tile alone: {1000 * alone:.2f} ms, {1 / alone:.0f} forwards/s")
    print("(each repeat also runs it 0.5 s with nothing beside it: 'alone' is the median of those)")
    print(f"{'phase':10s} {'where':36s} {'wall s':>8s} {'lost s':>8s} {'forwards/s':>11s} {'vs alone':>9s}")
    for (phase, way), passes in runs.items():
        wall = statistics.median(run[1] for run in passes)
        lost = statistics.median(sum(run[2]) - len(run[2]) * alone for run in passes)
        rate = statistics.median(len(run[2]) / sum(run[2]) for run in passes)
        print(f"{phase:10s} {way:36s} {wall:8.3f} {lost:8.3f} {rate:11.0f} {rate * alone:8.2f}x")


if __name__ == "__main__":
    main()
