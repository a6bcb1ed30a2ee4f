"""Fused ops: each a PyTorch reference, a Triton kernel, and a dispatcher (Triton on CUDA)."""

from vismtl.ops.expert_gating import expert_gating
from vismtl.ops.tile_blend import blend_tiles

__all__ = ["blend_tiles", "expert_gating"]
