"""Evaluation: streaming metrics over a loader, exact under distributed evaluation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vismtl.progress import progress_bar
from vismtl.tasks import Task

BatchCallback = Callable[[dict[str, Any], dict[str, torch.Tensor]], None]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    tasks: Mapping[str, Task],
    device: torch.device,
    amp: bool = False,
    callbacks: Sequence[BatchCallback] = (),
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Run ``model`` over ``loader`` and return ``{task: {metric: value}}``.

    Each rank evaluates its own shard; metric states are summed over ranks before the
    values are computed, so the result equals a single-process evaluation. A sample
    counts for a task only where its ``task_mask`` says it is labelled.

    Args:
        callbacks: each is called with every batch and its postprocessed predictions
            (panels, exports).
    """
    was_training = model.training
    model.eval()
    metrics = {name: task.new_metric() for name, task in tasks.items()}
    bar = progress_bar(loader, desc="eval", disable=not progress, leave=False)
    with bar:  # closed before an error's message, not after it
        for batch in bar:
            image = batch["image"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                outputs = model(image)
            predictions = {name: task.postprocess(outputs[name].float()) for name, task in tasks.items()}
            predictions = {name: task.refine(predictions[name], predictions) for name, task in tasks.items()}
            for t, name in enumerate(tasks):
                # Post-processing may leave a prediction on the CPU (instance maps): follow it.
                where = predictions[name].device
                labelled = batch["task_mask"][:, t].to(where)
                if labelled.any():
                    target = batch[name].to(where, non_blocking=True)
                    metrics[name].update(predictions[name][labelled], target[labelled])
            for callback in callbacks:
                callback(batch, predictions)
    model.train(was_training)
    results = {}
    for name, metric in metrics.items():
        metric.merge()
        results[name] = metric.compute()
    return results
