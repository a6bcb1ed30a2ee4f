"""PyTorch calls the slide engine's model thread makes per tile, by op: its host-side overhead.

    python benchmarks/wsi_host_ops.py [--size 6000] [--batch-size 16] [--histology-checkpoint CKPT]

On a GPU the engine's process launches the model, blends its outputs into the chunks and keeps
tiles for later chunks from one Python thread, beside reading and writing threads: every
PyTorch call there gives up and takes back the GIL, so the calls per tile bound the tiles per
second whatever the GPU's speed (``docs/benchmarks.md``, "GPU"). This counts them: the
histology quickstart's outputs replayed (``wsi_throughput.py --replay``: the model costs one
indexing per task, so what is counted is the engine's own calls) over the generated bench
slide, once, under ``torch.profiler``, which records the ops of the thread that starts it (the
model's). Each top-level ``aten::`` op (called from Python, not from inside another op) counts
once. The count depends on the code path (CPU or GPU canvases), not on the machine's speed.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_description, quickstart_histology  # noqa: E402
from vismtl.wsi import SlideRunner  # noqa: E402
from vismtl.wsi.inputs import SlideInput  # noqa: E402
from wsi_throughput import DEVICE, Replayed, bench_settings, make_slide, real_outputs  # noqa: E402


def top_level(event) -> bool:
    """An ``aten::`` op not called from inside another one."""
    if not event.name.startswith("aten::"):
        return False
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return False
        parent = parent.cpu_parent
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=6000, help="side of the generated bench slide")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--histology-checkpoint", help="weights (default: random; real ones give real objects)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vismtl_bench")
    parser.add_argument("--top", type=int, default=12, help="ops listed")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    slide = make_slide(args.cache / f"tissue_{args.size}.tiff", args.size)
    model, tasks = quickstart_histology(args.histology_checkpoint)
    replayed = Replayed(real_outputs(model, slide, args.size, 256 + 2 * 32))
    options = argparse.Namespace(batch_size=[args.batch_size], workers=[0], writers=None, amp=False)
    settings = bench_settings(options, threads=0, context=32)
    out = Path(tempfile.mkdtemp(prefix="wsi_host_ops_", dir=args.cache))
    try:
        with SlideRunner(replayed, tasks, settings, DEVICE) as runner:
            runner.wait_ready()
            with profile(activities=[ProfilerActivity.CPU]) as recorded:
                entry = runner.run(SlideInput(slide, "bench"), out, resume=False)
        if entry["status"] != "done":
            raise SystemExit(f"the run failed: {entry}")
        tiles = json.loads((out / "bench" / "summary.json").read_text())["tiles"]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    ops = collections.Counter(event.name for event in recorded.events() if top_level(event))
    total = sum(ops.values())
    print(f"device: {device_description()}; slide {args.size} x {args.size}, batch {args.batch_size}, {tiles} tiles")
    print("| op | calls | per tile |\n|---|---|---|")
    for name, count in ops.most_common(args.top):
        print(f"| {name} | {count} | {count / tiles:.1f} |")
    print(f"| all {len(ops)} ops | {total} | **{total / tiles:.1f}** |")


if __name__ == "__main__":
    main()
