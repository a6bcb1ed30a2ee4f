"""Delta_m of several configs over several seeds against single-task baselines.

    python benchmarks/decoder_comparison.py \
        --configs configs/quickstart.py configs/scenes/taskexpert_resnet18.py --seeds 0 1 2

Each (config, seed) is trained with tools/train.py into work_dirs/compare/<config>_seed<N>/
(skipped when its eval.json exists, so an interrupted comparison resumes), then the
headline metrics and Delta_m against the single-task baselines (the eval.json files of
the configs/scenes/stl_*.py runs by default) are printed as mean +- standard deviation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from vismtl.config import load_config
from vismtl.tasks import build_tasks, delta_m, load_baselines

ROOT = Path(__file__).resolve().parents[1]


def run(config: Path, seed: int) -> dict:
    work_dir = ROOT / "work_dirs" / "compare" / f"{config.stem}_seed{seed}"
    result = work_dir / "eval.json"
    if not result.is_file():
        command = [sys.executable, str(ROOT / "tools" / "train.py"), str(config), "--seed", str(seed)]
        subprocess.run([*command, "--work-dir", str(work_dir), "--resume"], check=True, cwd=ROOT)
    return json.loads(result.read_text())["tasks"]


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):7.2f} +- {spread:5.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", type=Path, required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--baselines", nargs="+", help="single-task eval.json files (default: the config's)")
    args = parser.parse_args()
    rows = []
    for config in args.configs:
        cfg = load_config(config)
        tasks = build_tasks(cfg.tasks)
        baselines = load_baselines(args.baselines or str(ROOT / cfg.evaluation.baselines), list(tasks))
        per_seed = [run(config, seed) for seed in args.seeds]
        metrics = {name: [r[name][task.headline[0]] for r in per_seed] for name, task in tasks.items()}
        deltas = [delta_m(r, baselines, tasks) for r in per_seed]
        rows.append((config.stem, metrics, deltas, tasks, baselines))
    print(f"seeds {args.seeds}; mean +- standard deviation")
    names = list(rows[0][3])
    header = "".join(f"{n + ' ' + rows[0][3][n].headline[0]:>20s}" for n in names)
    print(f"{'model':24s}{header}{'Delta_m %':>20s}")
    tasks, baselines = rows[0][3], rows[0][4]
    base = "".join(f"{baselines[n][tasks[n].headline[0]]:20.2f}" for n in names)
    print(f"{'single-task baselines':24s}{base}{0.0:20.2f}")
    for name, metrics, deltas, *_ in rows:
        print(f"{name:24s}" + "".join(f"{summary(metrics[n]):>20s}" for n in names) + f"{summary(deltas):>20s}")


if __name__ == "__main__":
    main()
