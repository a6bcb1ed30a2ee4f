"""Train a multi-task model.

python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--seed N] [--cfg-options k=v ...]
torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch
"""

from __future__ import annotations

import argparse
import sys

from vismtl.config import DictAction
from vismtl.engine import train
from vismtl.engine.cli import run_command, run_tool


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file, e.g. configs/quickstart.py")
    parser.add_argument("--work-dir", help="output folder (default: work_dirs/<config name>)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CKPT",
        help="continue from CKPT, or from the work dir's latest checkpoint",
    )
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config entries: key=value")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="'pytorch' under torchrun")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_command(
        lambda: train(args.config, args.work_dir, args.resume, args.amp, args.seed, args.cfg_options, args.launcher),
        interrupted="rerun with --resume to continue from the last checkpoint saved",
    )


if __name__ == "__main__":
    sys.exit(run_tool(main))
