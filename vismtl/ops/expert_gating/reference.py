"""PyTorch reference of TaskExpert's gating step (also the CPU path).

Shapes, channels-last (R = any leading dims, e.g. batch x pixels):

    experts  [R, N, D]      N expert features
    logits   [R, T, N + 1]  per task: N expert gates and one memory gate
    memory   [R, T, D]      each task's memory feature

    mixed      [R, T, D] = sum_n g[t, n] experts[n] + g[t, N] memory[t],  g = softmax(logits)
    new_memory [R, T, D] = memory + mixed
"""

from __future__ import annotations

import torch


def expert_gating_reference(
    experts: torch.Tensor, logits: torch.Tensor, memory: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batched matrix product per row (``[T, N] @ [N, D]``); computed in float32 at least."""
    num_experts = experts.shape[-2]
    compute = torch.promote_types(experts.dtype, torch.float32)
    gates = torch.softmax(logits.to(compute), dim=-1)
    mixed = torch.matmul(gates[..., :num_experts], experts.to(compute)) + gates[..., num_experts:] * memory.to(compute)
    mixed = mixed.to(experts.dtype)
    return mixed, memory + mixed


def expert_gating_naive(
    experts: torch.Tensor, logits: torch.Tensor, memory: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The straightforward broadcast-and-sum: materialises ``[R, T, N, D]`` (for benchmarks)."""
    num_experts = experts.shape[-2]
    compute = torch.promote_types(experts.dtype, torch.float32)
    gates = torch.softmax(logits.to(compute), dim=-1).to(experts.dtype)
    weighted = gates[..., :num_experts, None] * experts[..., None, :, :]  # [R, T, N, D]
    mixed = weighted.sum(dim=-2) + gates[..., num_experts:] * memory
    return mixed, memory + mixed
