"""Task kinds: what to predict, how to learn it, how to judge it, how to show it.

Add a kind by writing its module and one line in ``TASK_KINDS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vismtl.config import ConfigError, call_with_config, suggest
from vismtl.tasks.base import IGNORE_INDEX, Metric, Task
from vismtl.tasks.delta_m import delta_m, load_baselines
from vismtl.tasks.depth import DepthTask
from vismtl.tasks.edge import EdgeTask
from vismtl.tasks.instance import InstanceTask
from vismtl.tasks.normals import NormalsTask
from vismtl.tasks.patch_class import PatchClassTask
from vismtl.tasks.saliency import SaliencyTask
from vismtl.tasks.semseg import PartsTask, SemsegTask
from vismtl.tasks.typemap import TypeTask

TASK_KINDS: dict[str, type[Task]] = {
    "semseg": SemsegTask,
    "parts": PartsTask,
    "saliency": SaliencyTask,
    "depth": DepthTask,
    "normals": NormalsTask,
    "edge": EdgeTask,
    "instance": InstanceTask,
    "type": TypeTask,
    "patch_class": PatchClassTask,
}


def build_tasks(cfg: Mapping[str, Mapping[str, Any]]) -> dict[str, Task]:
    """``{name: dict(kind=..., **options)}`` -> ``{name: Task}`` in config order."""
    if not cfg:
        raise ConfigError("the config defines no tasks (add e.g. tasks = dict(semseg=dict(kind='semseg')))")
    tasks = {}
    for name, options in cfg.items():
        options = dict(options)
        kind = options.pop("kind", name)
        if kind not in TASK_KINDS:
            raise ConfigError(
                f"unknown task kind '{kind}' for task '{name}'{suggest(kind, TASK_KINDS)}; "
                f"known kinds: {', '.join(TASK_KINDS)}"
            )
        tasks[name] = call_with_config(TASK_KINDS[kind], options, f"tasks.{name}", name=name)
    return tasks


__all__ = ["IGNORE_INDEX", "TASK_KINDS", "Metric", "Task", "build_tasks", "delta_m", "load_baselines"]
