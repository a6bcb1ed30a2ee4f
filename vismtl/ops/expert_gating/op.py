"""The expert-gating op: autograd function and dispatch (Triton on CUDA, the reference elsewhere)."""

from __future__ import annotations

import torch

from vismtl.ops.expert_gating.reference import expert_gating_reference

IMPLEMENTATIONS = ("auto", "triton", "reference")


class ExpertGatingFunction(torch.autograd.Function):
    """Triton forward and backward; inputs are flattened to rows and made contiguous."""

    @staticmethod
    def forward(ctx, experts: torch.Tensor, logits: torch.Tensor, memory: torch.Tensor):
        from vismtl.ops.expert_gating import triton_kernels  # Triton is imported only when used

        ctx.save_for_backward(experts, logits, memory)
        return triton_kernels.gating_forward(experts, logits, memory)

    @staticmethod
    def backward(ctx, d_mixed: torch.Tensor | None, d_new_memory: torch.Tensor | None):
        from vismtl.ops.expert_gating import triton_kernels

        experts, logits, memory = ctx.saved_tensors
        d_mixed = torch.zeros_like(memory) if d_mixed is None else d_mixed.contiguous()
        d_new_memory = torch.zeros_like(memory) if d_new_memory is None else d_new_memory.contiguous()
        return triton_kernels.gating_backward(experts, logits, memory, d_mixed, d_new_memory)


def expert_gating(
    experts: torch.Tensor, logits: torch.Tensor, memory: torch.Tensor, impl: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix N expert features and each task's memory with per-row softmax gates.

    Args:
        experts: ``[..., N, D]`` expert features (one row per pixel or token).
        logits: ``[..., T, N + 1]`` gate logits: N experts then the memory, per task.
        memory: ``[..., T, D]`` each task's memory feature.
        impl: ``"auto"`` (the reference: inside TaskExpert on an H100 it trained 1.1-1.3x and
            inferred 1.4-1.6x faster than the fused kernel, ``docs/benchmarks.md``), ``"triton"``
            (the fused kernels, CUDA or the Triton interpreter) or ``"reference"``.

    Returns:
        ``mixed [..., T, D]`` = sum_n g_n experts_n + g_N memory and ``new_memory`` =
        memory + mixed, with g = softmax(logits).
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown impl '{impl}' (use one of {', '.join(IMPLEMENTATIONS)})")
    if impl in ("reference", "auto"):
        return expert_gating_reference(experts, logits, memory)
    lead = experts.shape[:-2]
    num_experts, channels = experts.shape[-2:]
    tasks = logits.shape[-2]
    if logits.shape != (*lead, tasks, num_experts + 1) or memory.shape != (*lead, tasks, channels):
        raise ValueError(
            f"expert_gating shapes disagree: experts {tuple(experts.shape)}, logits {tuple(logits.shape)}, "
            f"memory {tuple(memory.shape)} (expected [..., N, D], [..., T, N+1], [..., T, D])"
        )
    mixed, new_memory = ExpertGatingFunction.apply(
        experts.reshape(-1, num_experts, channels).contiguous(),
        logits.reshape(-1, tasks, num_experts + 1).contiguous(),
        memory.reshape(-1, tasks, channels).contiguous(),
    )
    return mixed.view(*lead, tasks, channels), new_memory.view(*lead, tasks, channels)
