"""Derive PASCAL-Context's edges, human-parts maps and normals masks once (resumable).

    python tools/prepare_pascal_context.py ROOT [--cache DIR] [--workers N]

Writes ROOT/vismtl_cache/{edge,human_parts,normals_mask}/<id>.png for the train and val ids.
A rerun skips finished images; files are written atomically.
"""

from __future__ import annotations

import argparse
import sys

from vismtl.data.pascal_prepare import prepare_pascal_context
from vismtl.engine.cli import run_command, run_tool


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the PASCAL_MT folder")
    parser.add_argument("--cache", help="where to write the derived labels (default ROOT/vismtl_cache)")
    parser.add_argument("--workers", type=int, default=2, help="processes")
    args = parser.parse_args(argv)
    failures = {}

    def run():
        report = prepare_pascal_context(args.root, args.cache, workers=args.workers)
        print(f"derived {report.done} images, {report.skipped} already done, {len(report.failed)} failed")
        for image_id, error in report.failed.items():
            print(f"  {image_id}: {error}", file=sys.stderr)
        failures.update(report.failed)

    status = run_command(run)
    return status or (1 if failures else 0)


if __name__ == "__main__":
    sys.exit(run_tool(main))
