"""Evaluate a checkpoint: metrics table, eval.json, optional prediction panels.

python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--export-dir DIR] [--cfg-options k=v ...]
"""

from __future__ import annotations

import argparse
import sys

from vismtl.config import DictAction
from vismtl.engine import test
from vismtl.engine.cli import run_command, run_tool


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file the checkpoint was trained with")
    parser.add_argument("checkpoint", help="checkpoint file (.pth)")
    parser.add_argument("--work-dir", help="where eval.json goes (default: work_dirs/<config name>)")
    parser.add_argument("--show-dir", help="write PNG panels (input, predictions, ground truth) here")
    parser.add_argument(
        "--export-dir", help="save every prediction as DIR/<task>/<image>.png (edges in the layout SEISM reads)"
    )
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config entries: key=value")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="'pytorch' under torchrun")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    options = dict(
        show_dir=args.show_dir,
        export_dir=args.export_dir,
        cfg_options=args.cfg_options,
        amp=args.amp,
        launcher=args.launcher,
    )
    return run_command(lambda: test(args.config, args.checkpoint, args.work_dir, **options))


if __name__ == "__main__":
    sys.exit(run_tool(main))
