"""Run a model over whole-slide images.

    python tools/infer_wsi.py CONFIG CHECKPOINT SLIDE|DIR|LIST.txt ... --out-dir DIR [--resume] [options]
    torchrun --nproc_per_node=N tools/infer_wsi.py ... --launcher pytorch

Under torchrun N may exceed the node's GPUs: the processes then share them in turn (each its own
slides, reading and finishing processes and share of the cores).

Writes DIR/<slide>/ (zarr rasters, GeoJSON instances, tissue mask, thumbnail, summary.json)
and DIR/manifest.json. The exit status is 1 when any slide failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

from vismtl.wsi.settings import WSISettings


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the model's config")
    parser.add_argument("checkpoint", help="its checkpoint")
    parser.add_argument("inputs", nargs="+", help="slide files, folders of slides, or .txt files listing slides")
    parser.add_argument("--out-dir", help="output folder")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the checkpoint and every slide (opens, resolution, tissue) and count the tiles to run; "
        "no model run, nothing written",
    )
    parser.add_argument("--resume", action="store_true", help="skip finished slides, continue partial ones")
    parser.add_argument("--mpp", dest="slide_mpp", type=float, help="microns per pixel of slides without that metadata")
    # Options named as WSISettings fields override the config's wsi section.
    parser.add_argument("--target-mpp", dest="mpp", type=float, help="microns per pixel of the output grid")
    parser.add_argument("--tile", type=int, help="output pixels kept per tile")
    parser.add_argument("--stride", type=int, help="step between tiles (default: the tile size)")
    parser.add_argument("--context", type=int, help="context pixels on each side of a tile")
    parser.add_argument(
        "--chunk", type=int, help="side of the output chunks (default: the multiple of the step nearest 1024)"
    )
    parser.add_argument("--margin", type=int, help="pixels around a chunk for instances cut by its border")
    parser.add_argument("--batch-size", type=int, help="tiles per model call")
    parser.add_argument(
        "--tile-cache-mb",
        type=float,
        help="memory for tiles kept for the neighbouring chunks whose margins they cover (default 512; 0: none)",
    )
    parser.add_argument(
        "--workers", type=int, help="tile-reading processes (0: one thread; default 0 on the CPU, 4 on a GPU)"
    )
    parser.add_argument(
        "--threads", type=int, help="CPU threads of the engine's process (default: one per core; 4 with a GPU)"
    )
    parser.add_argument(
        "--writers", type=int, help="threads finishing and writing chunks (default 2, or finish workers + 1)"
    )
    parser.add_argument(
        "--finish-workers",
        type=int,
        help="processes finishing chunks (watershed, outlines, ...; default 0 on the CPU, the free cores on a GPU)",
    )
    parser.add_argument(
        "--mask-dir",
        help="folder of masks overriding the automatic one: <slide name>.png (nonzero: run) or <slide name>.geojson "
        "(regions drawn in QuPath)",
    )
    parser.add_argument("--tissue", choices=["auto", "all"], help="'all': run every tile, not only tissue")
    parser.add_argument(
        "--max-upsampling",
        type=float,
        help="run slides scanned up to this many times coarser than the model's mpp (default 2; coarser ones fail)",
    )
    parser.add_argument("--amp", action="store_true", default=None, help="bfloat16 autocast")
    parser.add_argument(
        "--compile", action="store_true", default=None, help="torch.compile the model (a slow first batch)"
    )
    parser.add_argument(
        "--cuda-graph", action="store_true", default=None, help="on a GPU, replay the model as a CUDA graph"
    )
    parser.add_argument(
        "--decide-on-gpu", action="store_true", default=None, help="on a GPU, decide the nuclei beside the model"
    )
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="'pytorch' under torchrun")
    args = parser.parse_args(argv)
    if not args.out_dir and not args.dry_run:
        parser.error("the following arguments are required: --out-dir (or --dry-run)")
    return args


def main(argv=None) -> int:
    # Imported here, not above: the chunk-finishing processes are spawned, so each imports this
    # script again, and these (the model builders: timm, torchvision) cost seconds apiece there.
    from vismtl.engine.cli import run_command
    from vismtl.wsi.batch import infer_slides, survey_slides

    args = parse_args(argv)
    options = {f.name: getattr(args, f.name, None) for f in fields(WSISettings)}
    entries = []
    if args.dry_run:
        if int(os.environ.get("RANK", 0)) != 0:  # under torchrun, one survey is enough: rank 0's
            return 0
        status = run_command(
            lambda: entries.extend(survey_slides(args.config, args.checkpoint, args.inputs, args.slide_mpp, options))
        )
        return status or report_survey(entries)

    def run():
        entries.extend(
            infer_slides(
                args.config,
                args.checkpoint,
                args.inputs,
                args.out_dir,
                args.resume,
                args.slide_mpp,
                options,
                args.launcher,
            )
        )

    status = run_command(run, interrupted="the chunks written are kept; rerun the same command with --resume to go on")
    if status:
        return status
    if int(os.environ.get("RANK", 0)) != 0:
        # rank 0 reports the merged manifest and its status; a rank ending with 1 for a failed
        # slide would have torchrun end the others, rank 0 among them, before the merge
        return 0
    manifest = Path(args.out_dir) / "manifest.json"
    if manifest.is_file():
        entries = json.loads(manifest.read_text())["slides"]

    def note(entry: dict) -> str:
        damaged = entry.get("unreadable_tiles")
        return entry.get("error") or (f"{damaged} tiles could not be read and were left white" if damaged else "")

    return report(entries, note, f"see {manifest} and {manifest.parent / 'slides.csv'}")


def report_survey(entries: list[dict]) -> int:
    """What a dry run found, a line per slide and the totals; 1 if a slide would fail."""

    def note(entry: dict) -> str:
        if entry["status"] == "failed":
            return entry["error"]
        (width, height), area = entry["size"], entry["tissue_mm2"]
        return f"{width} x {height} px at {entry['mpp']:.4g} um/px, {area:.2f} mm2 of tissue, {entry['tiles']} tiles"

    return report(entries, note, f"{sum(e.get('tiles', 0) for e in entries)} tiles to run")


def report(entries: list[dict], note, tail: str) -> int:
    """Print a line per slide (its status, name and ``note(entry)``) and the tally by status, as in
    "3 slides: 2 done, 1 failed; ``tail``"; the exit status: 1 if a slide failed."""
    for entry in entries:
        print(f"{entry['status']:>9s}  {entry['name']}  {note(entry)}")
    tally = Counter(e["status"] for e in entries)
    slides = f"{len(entries)} slide{'' if len(entries) == 1 else 's'}"
    print(f"{slides}: " + ", ".join(f"{n} {status}" for status, n in tally.items()) + f"; {tail}")
    return 1 if tally["failed"] else 0


if __name__ == "__main__":
    from vismtl.engine.cli import run_tool  # here, not above: see main

    sys.exit(run_tool(main))
