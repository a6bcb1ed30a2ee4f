"""Peak memory of whole-slide inference on a 100,000 x 100,000 slide against a 10,000 x 10,000 one.

    python benchmarks/wsi_memory.py [--sizes 10000 100000] [--workers 0]

Both generated pyramidal TIFFs hold the same tissue (three regions of generated H&E tiles
near the top-left corner) on otherwise blank glass, so the work is the same and only the
slide's size differs. Each run is a separate process (tools/infer_wsi.py's Python API with
the histology quickstart model, random weights) whose peak memory is sampled every 50 ms
as the sum of the proportional set size (PSS: shared pages split between processes) of the
process and its reading processes. Targets: under 3 GiB, and the large slide within 1.2x of
the small one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vismtl.wsi.synthetic import tissue_boxes_content, write_slide  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TISSUE = [(1000, 1000, 3000, 3500), (4000, 1500, 5500, 3000), (2000, 5000, 3500, 8000)]  # level-0 boxes

RUN = """
import sys, torch
from pathlib import Path
from vismtl.config import load_config
from vismtl.models import build_model
from vismtl.tasks import build_tasks
from vismtl.wsi import SlideRunner, WSISettings
from vismtl.wsi.inputs import SlideInput
cfg = load_config({config!r})
tasks = build_tasks(cfg.tasks)
torch.manual_seed(0)
model = build_model(cfg.model, tasks)
settings = WSISettings(mpp=0.5, tile=256, context=32, chunk=1024, margin=64, batch_size=8, workers={workers})
with SlideRunner(model, tasks, settings, torch.device("cpu")) as runner:
    entry = runner.run(SlideInput(Path({slide!r}), "slide"), Path({out!r}), False)
print("ENTRY", entry)
"""


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return [pid] + [p for kid in kids for p in process_tree(kid)]


def pss_bytes(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def measure(slide: Path, workers: int, out: Path) -> tuple[float, float, str]:
    """(peak GiB, seconds, manifest entry) of one run in a fresh process."""
    script = RUN.format(
        config=str(ROOT / "configs" / "cerberus" / "quickstart_tissue.py"),
        slide=str(slide),
        out=str(out),
        workers=workers,
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, pss_bytes(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    sampler.start()
    stdout, _ = process.communicate()
    stop.set()
    sampler.join()
    entry = next((line for line in stdout.splitlines() if line.startswith("ENTRY")), "ENTRY (none)")
    return peak / 2**30, time.perf_counter() - started, entry[6:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, default=0, help="reading processes (0: a thread, the CPU default)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vismtl_bench")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        slide = args.cache / f"memory_{size}.tiff"
        if not slide.is_file():
            started = time.perf_counter()
            write_slide(slide, size, size, tissue_boxes_content(TISSUE), mpp=0.5, tile=512, downsamples=(1, 4, 16, 64))
            print(f"wrote {slide} ({slide.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s")
        out = Path(tempfile.mkdtemp(prefix=f"wsi_mem_{size}_", dir=args.cache))
        peak, seconds, entry = measure(slide, args.workers, out)
        if "'done'" not in entry:
            raise SystemExit(f"the {size} run did not finish: {entry}")
        tiles = json.loads((out / "slide" / "summary.json").read_text())["tiles"]
        rows.append((size, peak, seconds, tiles))
    print(f"{'slide':>16s} {'tiles':>6s} {'peak PSS GiB':>13s} {'seconds':>8s} {'vs smallest':>12s}")
    for size, peak, seconds, tiles in rows:
        print(f"{size:>7d} x {size:<7d} {tiles:6d} {peak:13.2f} {seconds:8.1f} {peak / rows[0][1]:11.2f}x")


if __name__ == "__main__":
    main()
