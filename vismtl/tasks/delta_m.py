"""Delta_m: the average relative gain of a multi-task model over single-task baselines.

Delta_m = (1/T) sum_t (-1)^{l_t} (M_t - M_STL,t) / M_STL,t, with l_t = 1 where lower is
better, one headline metric per task (Maninis et al. 2019; Vandenhende et al. 2021),
reported in percent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from vismtl.tasks.base import Task

Results = Mapping[str, Mapping[str, float]]


def load_baselines(
    source: Results | str | Path | list | tuple, tasks: Sequence[str] = ()
) -> dict[str, dict[str, float]]:
    """Single-task results from a dict, or from one or more ``eval.json`` files.

    Each file is ``{"tasks": {task: {metric: value}}, ...}`` as ``tools/test.py`` writes
    it; several files (one per single-task run) are merged, later files winning. A path
    with ``{task}`` in it stands for one file per name in ``tasks``
    (``"work_dirs/stl_{task}/eval.json"``).
    """
    if isinstance(source, Mapping):
        return {task: dict(metrics) for task, metrics in source.items()}
    if isinstance(source, str) and "{task}" in source:
        source = [source.format(task=task) for task in tasks]
    paths = [source] if isinstance(source, (str, Path)) else list(source)
    merged: dict[str, dict[str, float]] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"baseline results not found: {path} "
                "(train or test the single-task model first: its eval.json holds the baseline)"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"baseline results {path} are not valid JSON: {err}") from err
        if not isinstance(data, Mapping) or not isinstance(data.get("tasks"), Mapping):
            raise ValueError(f"baseline results {path} have no 'tasks' entry (expected tools/test.py's eval.json)")
        for task, metrics in data["tasks"].items():
            merged.setdefault(task, {}).update(metrics)
    return merged


def delta_m(results: Results, baselines: Results, tasks: Mapping[str, Task]) -> float | None:
    """Delta_m in percent over the tasks of ``tasks``; None if a baseline is missing."""
    gains = []
    for name, task in tasks.items():
        metric, higher_is_better = task.headline
        try:
            value, base = results[name][metric], baselines[name][metric]
        except KeyError:
            return None
        sign = 1.0 if higher_is_better else -1.0
        gains.append(sign * (value - base) / base)
    return 100.0 * sum(gains) / len(gains) if gains else None
