"""Fused ops: each a PyTorch reference, a Triton kernel, and a dispatcher (Triton on CUDA)."""

from vismtl.ops.expert_gating import expert_gating

__all__ = ["expert_gating"]
