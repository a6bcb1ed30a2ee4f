"""Slides shared out among ranks: a fixed split against slides taken as ranks become free.

    python benchmarks/wsi_ranks.py [--histology-checkpoint CKPT] [--ranks 2] [--repeats 2]
        [--large 5000] [--small 2500]

A batch of six generated slides at 0.5 um/px with about 10 % tissue (``wsi_throughput.py``'s
kind): two large (``--large`` px square) and four small (``--small``), given in two orders:

- "large ones apart" (L s L s s s): a fixed split of two ranks gives both large slides to rank 0;
- "large ones first" (L L s s s s): a fixed split gives each rank one of them.

Two ways to run the batch, alternating, each the processes of ``tools/infer_wsi.py`` with the
histology quickstart config (random weights unless a checkpoint is given), one thread and no
reading process per rank:

- fixed split: rank ``r`` runs slides ``r, r + W, ...`` (what ``--launcher pytorch`` did until
  2026-11-28), as ``W`` independent runs of the tool;
- claims: ``torchrun --nproc_per_node=W tools/infer_wsi.py ... --launcher pytorch`` (now: each
  rank takes the next slide no rank has taken, largest file first; ``vismtl/wsi/claims.py``).

Printed per order: the batch's wall seconds (median of ``--repeats``, process start-up
included, which both ways pay alike), the ratio to the fixed split, and which rank ran which
slides. Before the table, every slide is checked done exactly once by both ways, with the same
GeoJSON text.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_description, quickstart_histology  # noqa: E402
from vismtl.wsi.synthetic import tissue_boxes_content, write_slide  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "cerberus" / "quickstart_tissue.py"
ORDERS = {"large ones apart": "LsLsss", "large ones first": "LLssss"}


def make_slide(path: Path, size: int, seed: int) -> Path:
    """~10 % tissue in four blocks, as ``wsi_throughput.py``'s slide, with its own tissue (``seed``)."""
    side = int(size * 0.158)
    corners = [(size // 8, size // 8), (size // 8, size // 2), (size // 2, size // 8), (size // 2, size // 2)]
    boxes = [(y, x, y + side, x + side) for y, x in corners]
    return write_slide(path, size, size, tissue_boxes_content(boxes, seed=seed), mpp=0.5, tile=512)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_batch(slides: list[Path], out: Path, checkpoint: Path, ranks: int, claims: bool) -> float:
    """Wall seconds of the batch run one way; stops the benchmark if a run fails."""
    tool = [str(ROOT / "tools" / "infer_wsi.py"), str(CONFIG), str(checkpoint)]
    options = ["--threads", "1", "--workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if claims:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}"]
        launcher.append(f"--master_port={free_port()}")
        commands = [[*launcher, *tool, *map(str, slides), "--out-dir", str(out), "--launcher", "pytorch", *options]]
    else:
        commands = [
            [sys.executable, *tool, *map(str, slides[r::ranks]), "--out-dir", str(out / f"rank{r}"), *options]
            for r in range(ranks)
        ]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands
    ]
    results = [p.communicate() for p in processes]
    wall = time.perf_counter() - started
    for process, (_, stderr) in zip(processes, results):
        if process.returncode != 0:
            raise SystemExit(f"a run failed (exit {process.returncode}):\n{stderr[-2000:]}")
    return wall


def who_ran(out: Path, slides: list[Path], ranks: int, claims: bool) -> list[list[str]]:
    """Per rank, the names of the slides it ran, each slide checked done exactly once."""
    if claims:
        entries = json.loads((out / "manifest.json").read_text())["slides"]
    else:
        entries = []
        for r in range(ranks):
            part = json.loads((out / f"rank{r}" / "manifest.json").read_text())["slides"]
            entries += [{**e, "rank": r} for e in part]
    names = sorted(e["name"] for e in entries)
    if names != sorted(s.stem for s in slides) or any(e["status"] != "done" for e in entries):
        raise SystemExit(f"not every slide done exactly once: {entries}")
    return [[e["name"] for e in entries if e["rank"] == r] for r in range(ranks)]


def geojson_texts(out: Path, slides: list[Path], ranks: int, claims: bool) -> dict[str, str]:
    texts = {}
    for r, names in enumerate(who_ran(out, slides, ranks, claims)):
        for name in names:
            folder = out / name if claims else out / f"rank{r}" / name
            texts[name] = "".join(p.read_text() for p in sorted(folder.glob("*.geojson")))
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--histology-checkpoint", type=Path, help="trained weights (default: random)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--large", type=int, default=5000, help="side of the large slides, px")
    parser.add_argument("--small", type=int, default=2500, help="side of the small slides, px")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vismtl_ranks_"))
    try:
        checkpoint = args.histology_checkpoint
        if checkpoint is None:
            checkpoint = work / "random.pth"
            torch.manual_seed(0)
            torch.save({"model": quickstart_histology()[0].state_dict()}, checkpoint)
        else:
            quickstart_histology(checkpoint)  # a wrong checkpoint: one line naming it, before any run
        sources = {"L": [], "s": []}
        for k in range(2):
            sources["L"].append(make_slide(work / f"large{k}.tiff", args.large, seed=k))
        for k in range(4):
            sources["s"].append(make_slide(work / f"small{k}.tiff", args.small, seed=10 + k))
        print(f"device: {device_description()}; {args.ranks} ranks, 1 thread each; median of {args.repeats}")
        print("| order | way | median s | runs s | vs fixed split | slides per rank |")
        print("|---|---|---|---|---|---|")
        for order_name, order in ORDERS.items():
            taken = {"L": iter(sources["L"]), "s": iter(sources["s"])}
            slides = [next(taken[kind]) for kind in order]
            walls: dict[bool, list[float]] = {False: [], True: []}
            placed: dict[bool, list[list[str]]] = {}
            texts: dict[bool, dict[str, str]] = {}
            for repeat in range(args.repeats):
                for claims in (False, True):  # alternating: the machine's drift falls on both
                    out = work / f"out_{claims}_{repeat}"
                    walls[claims].append(run_batch(slides, out, checkpoint, args.ranks, claims))
                    placed[claims] = who_ran(out, slides, args.ranks, claims)
                    texts.setdefault(claims, geojson_texts(out, slides, args.ranks, claims))
                    shutil.rmtree(out)
            if texts[False] != texts[True]:
                raise SystemExit(f"{order_name}: the two ways gave different GeoJSON")
            fixed = statistics.median(walls[False])
            for claims, way in ((False, "fixed split"), (True, "claims")):
                median = statistics.median(walls[claims])
                runs = " / ".join(f"{w:.1f}" for w in walls[claims])
                ranks = "; ".join(", ".join(names) for names in placed[claims])
                print(f"| {order_name} ({order}) | {way} | {median:.1f} | {runs} | {fixed / median:.2f}x | {ranks} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
