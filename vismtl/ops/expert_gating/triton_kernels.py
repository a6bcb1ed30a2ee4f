"""Triton kernels of the expert-gating op: forward and backward, fused per block of rows.

Forward, per block of ``BLOCK_R`` rows and ``BLOCK_D`` channels: the softmax over the N+1
gate logits of every task, then one pass over the experts in which each expert tile is
loaded once and accumulated into all T tasks at once (``acc[T, R, D] += g_n[T, R] * e_n[R, D]``),
then the memory term and the memory update.

Backward (dF_tot = d_mixed + d_new_memory, since new_memory = memory + mixed):

    dg[t, n] = <dF_tot[t], experts[n]>,  dg[t, N] = <dF_tot[t], memory[t]>
    d_logits = g * (dg - sum_k g[k] dg[k])                     (softmax backward)
    d_experts[n] = sum_t g[t, n] dF_tot[t]
    d_memory[t] = d_new_memory[t] + g[t, N] dF_tot[t]

One program owns a block of rows and walks the channels twice: first to reduce dg over
D, then to write d_experts and d_memory. Shapes are flattened to rows: experts [R, N, D],
logits [R, T, N+1], memory [R, T, D], all contiguous.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _gates(logits_ptr, rows, rmask, T: tl.constexpr, K: tl.constexpr, T_PAD: tl.constexpr, K_PAD: tl.constexpr):
    """Softmax over the K = N + 1 logits of every (task, row): ``[T_PAD, BLOCK_R, K_PAD]`` float32."""
    ts = tl.arange(0, T_PAD)
    ks = tl.arange(0, K_PAD)
    mask = (ts < T)[:, None, None] & rmask[None, :, None] & (ks < K)[None, None, :]
    offsets = rows[None, :, None] * (T * K) + ts[:, None, None] * K + ks[None, None, :]
    logits = tl.load(logits_ptr + offsets, mask=mask, other=-float("inf")).to(tl.float32)
    peak = tl.max(logits, axis=2)
    peak = tl.where(peak == -float("inf"), 0.0, peak)  # padded (task, row) pairs: avoid nan
    weights = tl.where(mask, tl.exp(logits - peak[:, :, None]), 0.0)
    total = tl.sum(weights, axis=2)
    return weights / tl.where(total > 0, total, 1.0)[:, :, None]


@triton.jit
def _column(matrix, ks, index: tl.constexpr):
    """``matrix[:, :, index]`` of a ``[T, R, K]`` register tensor, as ``[T, R]``."""
    return tl.sum(tl.where(ks[None, None, :] == index, matrix, 0.0), axis=2)


@triton.jit
def _gating_forward_kernel(
    experts_ptr,
    logits_ptr,
    memory_ptr,
    mixed_ptr,
    new_memory_ptr,
    R,
    D,
    T: tl.constexpr,
    N: tl.constexpr,
    T_PAD: tl.constexpr,
    K_PAD: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ts = tl.arange(0, T_PAD)
    ks = tl.arange(0, K_PAD)
    rmask = rows < R
    dmask = cols < D
    gates = _gates(logits_ptr, rows, rmask, T, N + 1, T_PAD, K_PAD)

    acc = tl.zeros([T_PAD, BLOCK_R, BLOCK_D], dtype=tl.float32)
    emask = rmask[:, None] & dmask[None, :]
    for n in tl.static_range(N):
        expert = tl.load(experts_ptr + rows[:, None] * (N * D) + n * D + cols[None, :], mask=emask, other=0.0)
        acc += _column(gates, ks, n)[:, :, None] * expert.to(tl.float32)[None, :, :]

    tmask = (ts < T)[:, None, None] & emask[None, :, :]
    offsets = rows[None, :, None] * (T * D) + ts[:, None, None] * D + cols[None, None, :]
    memory = tl.load(memory_ptr + offsets, mask=tmask, other=0.0)
    mixed = acc + _column(gates, ks, N)[:, :, None] * memory.to(tl.float32)
    mixed = mixed.to(memory.dtype)  # round as the reference does before adding
    tl.store(mixed_ptr + offsets, mixed, mask=tmask)
    new_memory = memory.to(tl.float32) + mixed.to(tl.float32)
    tl.store(new_memory_ptr + offsets, new_memory.to(memory.dtype), mask=tmask)


@triton.jit
def _gating_backward_kernel(
    experts_ptr,
    logits_ptr,
    memory_ptr,
    d_mixed_ptr,
    d_new_ptr,
    d_experts_ptr,
    d_logits_ptr,
    d_memory_ptr,
    R,
    D,
    T: tl.constexpr,
    N: tl.constexpr,
    T_PAD: tl.constexpr,
    K_PAD: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    ts = tl.arange(0, T_PAD)
    ks = tl.arange(0, K_PAD)
    rmask = rows < R
    gates = _gates(logits_ptr, rows, rmask, T, N + 1, T_PAD, K_PAD)

    # Pass 1: dg[t, r, k] = <dF_tot[t, r], candidate k>, reduced over all channels.
    d_gates = tl.zeros([T_PAD, BLOCK_R, K_PAD], dtype=tl.float32)
    for start in range(0, D, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        emask = rmask[:, None] & (cols < D)[None, :]
        tmask = (ts < T)[:, None, None] & emask[None, :, :]
        offsets = rows[None, :, None] * (T * D) + ts[:, None, None] * D + cols[None, None, :]
        d_total = tl.load(d_mixed_ptr + offsets, mask=tmask, other=0.0).to(tl.float32)
        d_total += tl.load(d_new_ptr + offsets, mask=tmask, other=0.0).to(tl.float32)
        for n in tl.static_range(N):
            expert = tl.load(experts_ptr + rows[:, None] * (N * D) + n * D + cols[None, :], mask=emask, other=0.0)
            dot = tl.sum(d_total * expert.to(tl.float32)[None, :, :], axis=2)
            d_gates += tl.where(ks[None, None, :] == n, dot[:, :, None], 0.0)
        memory = tl.load(memory_ptr + offsets, mask=tmask, other=0.0).to(tl.float32)
        d_gates += tl.where(ks[None, None, :] == N, tl.sum(d_total * memory, axis=2)[:, :, None], 0.0)

    d_logits = gates * (d_gates - tl.sum(gates * d_gates, axis=2)[:, :, None])
    lmask = (ts < T)[:, None, None] & rmask[None, :, None] & (ks < N + 1)[None, None, :]
    loffsets = rows[None, :, None] * (T * (N + 1)) + ts[:, None, None] * (N + 1) + ks[None, None, :]
    tl.store(d_logits_ptr + loffsets, d_logits.to(d_logits_ptr.dtype.element_ty), mask=lmask)

    # Pass 2: d_experts and d_memory, tile by tile.
    memory_gate = _column(gates, ks, N)
    for start in range(0, D, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        emask = rmask[:, None] & (cols < D)[None, :]
        tmask = (ts < T)[:, None, None] & emask[None, :, :]
        offsets = rows[None, :, None] * (T * D) + ts[:, None, None] * D + cols[None, None, :]
        d_new = tl.load(d_new_ptr + offsets, mask=tmask, other=0.0).to(tl.float32)
        d_total = tl.load(d_mixed_ptr + offsets, mask=tmask, other=0.0).to(tl.float32) + d_new
        for n in tl.static_range(N):
            d_expert = tl.sum(_column(gates, ks, n)[:, :, None] * d_total, axis=0)
            eoffsets = rows[:, None] * (N * D) + n * D + cols[None, :]
            tl.store(d_experts_ptr + eoffsets, d_expert.to(d_experts_ptr.dtype.element_ty), mask=emask)
        d_memory = d_new + memory_gate[:, :, None] * d_total
        tl.store(d_memory_ptr + offsets, d_memory.to(d_memory_ptr.dtype.element_ty), mask=tmask)


def _meta(experts: torch.Tensor, logits: torch.Tensor) -> dict[str, int]:
    rows, num_experts, channels = experts.shape
    tasks = logits.shape[1]
    t_pad, k_pad = triton.next_power_of_2(tasks), triton.next_power_of_2(num_experts + 1)
    # Keep the [T, R, D] accumulator around 8k floats per program.
    block_d = min(triton.next_power_of_2(channels), 64)
    block_r = max(1, min(32, 8192 // (t_pad * block_d)))
    return dict(T=tasks, N=num_experts, T_PAD=t_pad, K_PAD=k_pad, BLOCK_R=block_r, BLOCK_D=block_d)


def gating_forward(
    experts: torch.Tensor,
    logits: torch.Tensor,
    memory: torch.Tensor,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """experts [R, N, D], logits [R, T, N+1], memory [R, T, D] (contiguous) -> (mixed, new_memory).

    ``out`` (optional) are the output buffers; tests pass NaN-filled ones to catch unwritten elements.
    """
    rows, _, channels = experts.shape
    meta = _meta(experts, logits)
    mixed, new_memory = out if out is not None else (torch.empty_like(memory), torch.empty_like(memory))
    grid = (triton.cdiv(rows, meta["BLOCK_R"]), triton.cdiv(channels, meta["BLOCK_D"]))
    _gating_forward_kernel[grid](experts, logits, memory, mixed, new_memory, rows, channels, **meta)
    return mixed, new_memory


def gating_backward(
    experts: torch.Tensor,
    logits: torch.Tensor,
    memory: torch.Tensor,
    d_mixed: torch.Tensor,
    d_new_memory: torch.Tensor,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients with respect to (experts, logits, memory); ``out`` as in :func:`gating_forward`."""
    rows, _, channels = experts.shape
    meta = _meta(experts, logits)
    if out is None:
        out = (torch.empty_like(experts), torch.empty_like(logits), torch.empty_like(memory))
    d_experts, d_logits, d_memory = out
    grid = (triton.cdiv(rows, meta["BLOCK_R"]),)
    _gating_backward_kernel[grid](
        experts, logits, memory, d_mixed, d_new_memory, d_experts, d_logits, d_memory, rows, channels, **meta
    )
    return d_experts, d_logits, d_memory
