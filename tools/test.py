"""Evaluate a checkpoint: metrics table, eval.json, optional prediction panels.

python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--cfg-options k=v ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from vismtl.config import ConfigError, DictAction
from vismtl.engine import test
from vismtl.engine.checkpoint import CheckpointError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file the checkpoint was trained with")
    parser.add_argument("checkpoint", help="checkpoint file (.pth)")
    parser.add_argument("--work-dir", help="where eval.json goes (default: work_dirs/<config name>)")
    parser.add_argument("--show-dir", help="write PNG panels (input, predictions, ground truth) here")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config entries: key=value")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="'pytorch' under torchrun")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        test(args.config, args.checkpoint, args.work_dir, args.show_dir, args.cfg_options, args.amp, args.launcher)
    except (ConfigError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
