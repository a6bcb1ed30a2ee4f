"""TaskExpert: a memorial mixture-of-experts decoder.

Ye & Xu, "TaskExpert: Dynamically Assembling Multi-Task Representations with Memorial
Mixture-of-Experts", ICCV 2023. No official code was released; this implementation follows
the abstract and Figure 2 of the paper. What they fix:

- at each tapped backbone layer, N expert networks decompose the backbone feature into N
  task-generic features;
- a gating network per task, input-dependent and per pixel, weighs the N experts and the
  task's memory feature (softmax over N + 1);
- the task feature F_t = sum_n g_{t,n} E_n + g_{t,N+1} M_t updates the multi-task feature
  memory at every tapped layer; after the last one the memory feeds each task's head.

Choices of ours where the paper's text is silent (all are options):

- ``num_experts`` = 8 and ``channels`` = 256 by default (the paper's values are not in the
  available text); each expert is a linear map, a LayerNorm and a GELU.
- The gates read the backbone feature of the layer (not the memory), through one linear
  map per layer and task; experts and gates of a layer come from one matrix product
  (C -> N*D + T*(N+1)), and the mixing is one fused op (``vismtl.ops.expert_gating``).
- The memory starts at zero and is updated additively, M_t <- M_t + F_t
  (``memory_update="replace"`` uses M_t <- F_t); it is layer-normalised before the heads.
- CNN taps at several strides are resized to one grid (``grid_stride``, default the
  stride closest to 16) before their layer's experts; ViT taps share their grid already.
- Each task's head input: the memory on the grid, upsampled by ``head_upsample`` and
  refined by a 3x3 conv-norm-ReLU (the model's 1x1 head and resize to the input follow).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vismtl.models.layers import ConvNormAct
from vismtl.ops.expert_gating import expert_gating


class MemorialMoE(nn.Module):
    """One layer's experts and per-task gates, from a single linear map.

    Args:
        in_channels: C of the backbone feature.
        num_experts: N.
        channels: D, the width of every expert and of the memory.
        num_tasks: T.
    """

    def __init__(self, in_channels: int, num_experts: int, channels: int, num_tasks: int) -> None:
        super().__init__()
        self.num_experts, self.channels, self.num_tasks = num_experts, channels, num_tasks
        self.project = nn.Linear(in_channels, num_experts * channels + num_tasks * (num_experts + 1))
        # Per-expert LayerNorm affine parameters (the normalisation itself is shared code).
        self.norm_weight = nn.Parameter(torch.ones(num_experts, channels))
        self.norm_bias = nn.Parameter(torch.zeros(num_experts, channels))

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feature ``[B, P, C]`` -> experts ``[B, P, N, D]`` and gate logits ``[B, P, T, N+1]``."""
        batch, pixels, _ = feature.shape
        n, d = self.num_experts, self.channels
        out = self.project(feature)
        experts = out[..., : n * d].reshape(batch, pixels, n, d)
        experts = F.layer_norm(experts, (d,)) * self.norm_weight + self.norm_bias
        logits = out[..., n * d :].reshape(batch, pixels, self.num_tasks, n + 1)
        return F.gelu(experts), logits


class TaskExpertDecoder(nn.Module):
    """Memorial mixture-of-experts over the tapped backbone features (see the module docstring).

    Args:
        in_channels: channels of each tapped feature.
        reductions: stride of each tapped feature.
        task_names: the tasks.
        num_experts: experts per layer (N).
        channels: expert and memory width (D).
        grid_stride: stride of the common grid (default: the tapped stride closest to 16).
        memory_update: ``"add"`` (M <- M + F) or ``"replace"`` (M <- F).
        head_upsample: factor from the grid to the heads' resolution.
        norm: norm of the head convs (``"bn"``, ``"gn"``, ``"none"``).
        gating_impl: ``"auto"`` (the reference: measured faster in this decoder on an H100),
            ``"triton"`` (the fused kernel) or ``"reference"``.

    Attributes:
        out_channels: ``{task: channels}``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        reductions: Sequence[int],
        task_names: Sequence[str],
        num_experts: int = 8,
        channels: int = 256,
        grid_stride: int | None = None,
        memory_update: str = "add",
        head_upsample: int = 4,
        norm: str = "bn",
        gating_impl: str = "auto",
    ) -> None:
        super().__init__()
        if memory_update not in ("add", "replace"):
            raise ValueError(f"memory_update must be 'add' or 'replace', not '{memory_update}'")
        self.task_names = list(task_names)
        self.reductions = list(reductions)
        self.grid_stride = grid_stride or min(reductions, key=lambda r: (abs(r - 16), r))
        self.memory_update, self.head_upsample, self.gating_impl = memory_update, head_upsample, gating_impl
        self.channels = channels
        num_tasks = len(self.task_names)
        self.layers = nn.ModuleList(MemorialMoE(c, num_experts, channels, num_tasks) for c in in_channels)
        self.memory_norm = nn.LayerNorm(channels)
        self.heads = nn.ModuleDict({name: ConvNormAct(channels, channels, 3, norm) for name in self.task_names})
        self.out_channels = {name: channels for name in self.task_names}

    def _grid_size(self, features: Sequence[torch.Tensor]) -> tuple[int, int]:
        """The common grid: the finest tap's size scaled from its stride to ``grid_stride``."""
        scale = self.reductions[0] / self.grid_stride
        height, width = features[0].shape[-2:]
        return max(1, round(height * scale)), max(1, round(width * scale))

    def _on_grid(self, feature: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """NCHW -> channels-last ``[B, P, C]`` on the common grid."""
        if feature.shape[-2:] != size:
            if feature.shape[-2] > size[0]:
                feature = F.adaptive_avg_pool2d(feature, size)
            else:
                feature = F.interpolate(feature, size=size, mode="bilinear", align_corners=False)
        return feature.flatten(2).transpose(1, 2)

    def run(self, features: Sequence[torch.Tensor], keep_gates: bool = False):
        """Returns the final memory ``[B, P, T, D]``, the grid size and (optionally) each layer's gates."""
        size = self._grid_size(features)
        memory, gates = None, []
        for layer, feature in zip(self.layers, features):
            experts, logits = layer(self._on_grid(feature, size))
            if memory is None:
                memory = experts.new_zeros(*experts.shape[:2], len(self.task_names), self.channels)
            mixed, added = expert_gating(experts, logits, memory, impl=self.gating_impl)
            memory = added if self.memory_update == "add" else mixed
            if keep_gates:
                gates.append(torch.softmax(logits.float(), dim=-1))
        return memory, size, gates

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """features (finest first) -> ``{task: [B, D, h * head_upsample, w * head_upsample]}``."""
        memory, size, _ = self.run(features)
        memory = self.memory_norm(memory)
        batch = memory.shape[0]
        out = {}
        for t, name in enumerate(self.task_names):
            grid = memory[:, :, t].transpose(1, 2).reshape(batch, self.channels, *size)
            if self.head_upsample > 1:
                grid = F.interpolate(grid, scale_factor=self.head_upsample, mode="bilinear", align_corners=False)
            out[name] = self.heads[name](grid)
        return out

    @torch.no_grad()
    def gate_maps(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each task's gate weights on the grid, per layer: ``{task: [B, L, N+1, h, w]}``."""
        _, size, gates = self.run(features, keep_gates=True)
        stacked = torch.stack(gates, dim=1)  # [B, L, P, T, N+1]
        batch, layers, _, _, k = stacked.shape
        return {
            name: stacked[:, :, :, t].permute(0, 1, 3, 2).reshape(batch, layers, k, *size)
            for t, name in enumerate(self.task_names)
        }
