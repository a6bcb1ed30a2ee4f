"""The multi-task loss: per-sample task losses, masked, normalised over the global batch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from vismtl.engine.distributed import all_reduce_sum, world_size
from vismtl.tasks import Task


@dataclass
class LossResult:
    total: torch.Tensor  # scalar to back-propagate (already scaled for DDP's gradient averaging)
    sums: torch.Tensor  # [T] this rank's sum of per-sample losses over labelled samples (detached)
    counts: torch.Tensor  # [T] labelled samples over all ranks

    def per_task(self, names: list[str]) -> dict[str, float]:
        """Each task's mean loss over the labelled samples of all ranks (a collective call)."""
        sums = all_reduce_sum(self.sums)
        return {n: (s / c).item() for n, s, c in zip(names, sums, self.counts) if c > 0}


def multitask_loss(
    outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], tasks: Mapping[str, Task]
) -> LossResult:
    """Sum over tasks of ``loss_weight * mean over labelled samples of the per-sample loss``.

    A sample counts for a task when its ``task_mask`` says it is labelled and its target
    has at least one valid pixel. The number of such samples is summed over all ranks
    (one small all-reduce) and the local sum is multiplied by the world size, so that after
    DDP averages the gradients, N ranks with B/N samples each give exactly the gradient of
    one rank with B samples, however the labels are spread over the ranks.
    """
    task_mask = batch["task_mask"]
    sums, counts, weights = [], [], []
    for t, (name, task) in enumerate(tasks.items()):
        per_sample, has_label = task.loss(outputs[name], batch[name])
        labelled = task_mask[:, t] & has_label
        sums.append(torch.where(labelled, per_sample, torch.zeros_like(per_sample)).sum())
        counts.append(labelled.sum())
        weights.append(task.loss_weight)
    sums_t = torch.stack(sums)
    global_counts = all_reduce_sum(torch.stack(counts).to(sums_t.dtype))
    weight_t = torch.tensor(weights, dtype=sums_t.dtype, device=sums_t.device)
    total = (weight_t * sums_t / global_counts.clamp(min=1)).sum() * world_size()
    return LossResult(total, sums_t.detach(), global_counts)
