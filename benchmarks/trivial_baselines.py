"""Metrics of trivial predictors on a config's validation set: what "learning" must beat.

    python benchmarks/trivial_baselines.py [--config configs/quickstart.py] [--train-samples 256]

Per task kind: the majority class of the training labels (semseg, parts, patch classes, and
object types inside objects), a constant saliency probability, the mean training normal, the
mean training depth, no edges and no instances. Predictions are refined as the evaluator
refines them: a type map voted over predicted objects is background when there are none.
Statistics come from ``--train-samples`` training samples; the metrics are the same
streaming metrics the evaluator uses.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from vismtl.config import load_config
from vismtl.data import build_dataset
from vismtl.engine.report import format_table
from vismtl.tasks import IGNORE_INDEX, build_tasks


def train_statistics(dataset, tasks, samples: int) -> dict[str, torch.Tensor]:
    """Per task: class pixel counts, or the mean normal / depth over valid pixels."""
    stats: dict[str, torch.Tensor] = {}
    # Spread over the whole dataset: multi-source datasets list their sources one after another.
    for index in np.unique(np.linspace(0, len(dataset) - 1, min(samples, len(dataset))).astype(int)).tolist():
        item = dataset[(index, index)]
        for name, task in tasks.items():
            target = item[name]
            if task.kind in ("semseg", "parts", "type"):
                valid = target[(target != IGNORE_INDEX) & ((target > 0) if task.kind == "type" else True)]
                value = torch.bincount(valid.flatten(), minlength=task.num_outputs).double()
            elif task.kind == "patch_class":
                if target.item() == IGNORE_INDEX:
                    continue
                value = torch.bincount(target.view(1), minlength=task.num_outputs).double()
            elif task.kind == "normals":
                valid = target.norm(dim=0) > 0.5
                value = target[:, valid].double().sum(dim=1)
            elif task.kind == "depth":
                value = torch.stack([target[target > 0].double().sum(), (target > 0).sum().double()])
            elif task.kind == "saliency":
                value = torch.stack([(target == 1).sum().double(), (target != IGNORE_INDEX).sum().double()])
            else:
                continue
            stats[name] = stats.get(name, 0) + value
    return stats


def trivial_prediction(task, stat, target: torch.Tensor) -> torch.Tensor:
    shape = target.shape if task.kind not in ("normals", "instance") else (target.shape[0], *target.shape[2:])
    if task.kind in ("semseg", "parts", "type", "patch_class"):
        return torch.full(shape, int(stat.argmax()), dtype=torch.int64)  # the majority class (inside objects)
    if task.kind == "instance":
        return torch.zeros(shape, dtype=torch.int32)  # no objects
    if task.kind == "normals":
        mean = F.normalize(stat.float(), dim=0)
        return mean.view(1, 3, 1, 1).expand(shape[0], 3, *shape[1:]).contiguous()
    if task.kind == "depth":
        return torch.full(shape, float(stat[0] / stat[1]))
    if task.kind == "saliency":
        return torch.full(shape, float(stat[0] / stat[1]))
    return torch.zeros(shape)  # edge: no boundaries anywhere


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/quickstart.py")
    parser.add_argument("--train-samples", type=int, default=256)
    args = parser.parse_args()
    cfg = load_config(args.config)
    tasks = build_tasks(cfg.tasks)
    stats = train_statistics(build_dataset(cfg.data.train, tasks, "data.train"), tasks, args.train_samples)
    val = build_dataset(cfg.data.val, tasks, "data.val")
    metrics = {name: task.new_metric() for name, task in tasks.items()}
    for index in range(len(val)):
        item = val[index]
        predictions = {n: trivial_prediction(t, stats.get(n), item[n][None]) for n, t in tasks.items()}
        for name, task in tasks.items():
            # as the evaluator does: object types are voted over the (here: no) predicted objects
            metrics[name].update(task.refine(predictions[name], predictions), item[name][None])
    results = {name: metric.compute() for name, metric in metrics.items()}
    print(f"trivial predictors on {args.config} (validation set, {len(val)} images)")
    print(format_table(results, tasks))


if __name__ == "__main__":
    main()
