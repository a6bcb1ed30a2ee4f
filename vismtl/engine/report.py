"""Evaluation results: the metrics table printed at the end and the ``eval.json`` file."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vismtl.io import write_json
from vismtl.tasks import Task, delta_m, load_baselines

Results = Mapping[str, Mapping[str, float]]
log = logging.getLogger("vismtl")


def compute_delta_m(results: Results, tasks: Mapping[str, Task], baselines: Any) -> float | None:
    """Delta_m against the configured baselines.

    None when no baselines are configured, or (with a warning, so a finished run still
    writes its results) when a baseline's ``eval.json`` does not exist yet.
    """
    if baselines is None:
        return None
    try:
        return delta_m(results, load_baselines(baselines, list(tasks)), tasks)
    except FileNotFoundError as err:
        log.warning("Delta_m not computed: %s", err)
        return None


def format_table(results: Results, tasks: Mapping[str, Task], delta: float | None = None) -> str:
    """A plain-text table: one block per task, its headline metric first and marked."""
    rows = [("task", "metric", "value")]
    for name, task in tasks.items():
        headline, higher = task.headline
        metrics = results.get(name, {})
        ordered = [headline] + [m for m in metrics if m != headline]
        for i, metric in enumerate(m for m in ordered if m in metrics):
            label = f"{metric} {'(higher better)' if higher else '(lower better)'}" if metric == headline else metric
            rows.append((name if i == 0 else "", label, _fmt(metrics[metric])))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    rule = "-" * (sum(widths) + 4)
    lines = [rule, "  ".join(c.ljust(w) for c, w in zip(rows[0], widths)), rule]
    for row in rows[1:]:
        if row[0] and len(lines) > 3:
            lines.append("")
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    lines.append(rule)
    if delta is not None:
        lines.append(f"Delta_m vs single-task baselines: {delta:+.2f} %")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def write_eval_json(path: Path, results: Results, delta: float | None, **meta: Any) -> None:
    """``{"tasks": {task: {metric: value}}, "delta_m": value-or-null, **meta}``, atomically."""
    write_json(path, {"tasks": {k: dict(v) for k, v in results.items()}, "delta_m": delta, **meta})
