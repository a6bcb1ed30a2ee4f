"""TaskExpert's gating step: softmax gates, expert mixing and memory update in one op."""

from vismtl.ops.expert_gating.op import expert_gating
from vismtl.ops.expert_gating.reference import expert_gating_naive, expert_gating_reference

__all__ = ["expert_gating", "expert_gating_naive", "expert_gating_reference"]
