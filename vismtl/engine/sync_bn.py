"""Synchronised BatchNorm that also works on the CPU (gloo).

``torch.nn.SyncBatchNorm`` only runs on GPUs. This module computes the batch statistics
over all ranks with differentiable all-reduces, so N ranks with B/N samples each give the
same normalisation, running statistics and gradients as one rank with B samples.
"""

from __future__ import annotations

import torch
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import nn

from vismtl.engine.distributed import world_size


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are pooled over all ranks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        channels = x.shape[1]
        count = torch.tensor([x.numel() / channels], dtype=x.dtype, device=x.device)
        local = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), count])
        total = dist_fn.all_reduce(local)
        n = total[-1]
        mean = total[:channels] / n
        var = total[channels : 2 * channels] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp(min=1), alpha=m)
        out = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d by a synchronised one (torch's on GPUs, ours on the CPU)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CPUSyncBatchNorm):
        new = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, _convert_cpu(child))
    return module


__all__ = ["CPUSyncBatchNorm", "convert_sync_batchnorm", "F"]
