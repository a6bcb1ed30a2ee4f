"""The fused expert-gating op: Triton forward and gradients equal the PyTorch reference.

On the CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set in conftest);
where CUDA is available the inputs go to the GPU, so the same tests check the compiled kernels.
Shapes are deliberately not multiples of the block sizes; output buffers are filled with
NaN first so that any element the kernels fail to write makes the test fail.
"""

from __future__ import annotations

import pytest
import torch

from conftest import KERNEL_DEVICE as DEVICE
from vismtl.ops.expert_gating import expert_gating, expert_gating_naive, expert_gating_reference, triton_kernels

# (rows, experts N, tasks T, channels D): D = 130 spans three 64-wide tiles; T = 5 pads to 8.
SHAPES = [(37, 5, 3, 21), (63, 3, 5, 130), (5, 7, 1, 64), (1, 1, 2, 3)]
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def inputs(rows, num_experts, tasks, channels, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    experts = torch.randn(rows, num_experts, channels, generator=gen).to(dtype)
    logits = (2 * torch.randn(rows, tasks, num_experts + 1, generator=gen)).to(dtype)
    memory = torch.randn(rows, tasks, channels, generator=gen).to(dtype)
    return experts.to(DEVICE), logits.to(DEVICE), memory.to(DEVICE)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.float()
    return ((actual.float() - expected).abs().max() / expected.abs().max().clamp(min=1e-12)).item()


def nan_like(tensor: torch.Tensor) -> torch.Tensor:
    return torch.full_like(tensor, float("nan"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_reference(shape, dtype):
    experts, logits, memory = inputs(*shape, dtype)
    out = (nan_like(memory), nan_like(memory))
    mixed, new_memory = triton_kernels.gating_forward(experts, logits, memory, out=out)
    ref_mixed, ref_new = expert_gating_reference(experts, logits, memory)
    assert not mixed.isnan().any() and not new_memory.isnan().any()
    assert relative_error(mixed, ref_mixed) < TOLERANCE[dtype]
    assert relative_error(new_memory, ref_new) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_reference(shape, dtype):
    experts, logits, memory = inputs(*shape, dtype, seed=1)
    gen = torch.Generator().manual_seed(2)
    d_mixed = torch.randn(memory.shape, generator=gen).to(DEVICE, dtype)
    d_new = torch.randn(memory.shape, generator=gen).to(DEVICE, dtype)
    out = (nan_like(experts), nan_like(logits), nan_like(memory))
    grads = triton_kernels.gating_backward(experts, logits, memory, d_mixed, d_new, out=out)

    leaves = [t.float().requires_grad_() for t in (experts, logits, memory)]
    ref_mixed, ref_new = expert_gating_reference(*leaves)
    expected = torch.autograd.grad((ref_mixed * d_mixed.float()).sum() + (ref_new * d_new.float()).sum(), leaves)
    for name, got, want in zip(("experts", "logits", "memory"), grads, expected):
        assert not got.isnan().any(), f"unwritten elements in d_{name}"
        assert relative_error(got, want) < TOLERANCE[dtype], name


def test_autograd_through_the_op_with_leading_dims():
    """[B, P, ...] inputs, one output used: the op's gradients equal the reference's."""
    experts, logits, memory = inputs(2 * 9, 4, 3, 33, torch.float32, seed=3)
    shaped = [t.view(2, 9, *t.shape[1:]).requires_grad_() for t in (experts, logits, memory)]
    mixed, _ = expert_gating(*shaped, impl="triton")
    grads = torch.autograd.grad(mixed.square().sum(), shaped)
    ref_leaves = [t.detach().clone().requires_grad_() for t in shaped]
    ref_mixed, _ = expert_gating_reference(*ref_leaves)
    expected = torch.autograd.grad(ref_mixed.square().sum(), ref_leaves)
    assert mixed.shape == (2, 9, 3, 33)
    for got, want in zip(grads, expected):
        assert relative_error(got, want) < 1e-5


def test_reference_equals_the_naive_broadcast():
    experts, logits, memory = inputs(11, 6, 4, 17, torch.float64)
    for got, want in zip(
        expert_gating_reference(experts, logits, memory), expert_gating_naive(experts, logits, memory)
    ):
        torch.testing.assert_close(got, want)


def test_gates_are_a_softmax_over_experts_and_memory():
    """With one logit far above the others the op selects that candidate exactly."""
    experts, _, memory = inputs(4, 3, 2, 5, torch.float64)
    logits = torch.full((4, 2, 4), -1e4, dtype=torch.float64, device=DEVICE)
    logits[:, 0, 1] = 0.0  # task 0 takes expert 1
    logits[:, 1, 3] = 0.0  # task 1 takes its memory
    mixed, new_memory = expert_gating(experts, logits, memory, impl="reference")
    torch.testing.assert_close(mixed[:, 0], experts[:, 1])
    torch.testing.assert_close(mixed[:, 1], memory[:, 1])
    torch.testing.assert_close(new_memory, memory + mixed)


def test_bad_shapes_and_impl_are_named():
    experts, logits, memory = inputs(4, 3, 2, 5, torch.float32)
    with pytest.raises(ValueError, match="expert_gating shapes disagree"):
        expert_gating(experts, logits[..., :3], memory, impl="triton")
    with pytest.raises(ValueError, match="unknown impl 'cuda'"):
        expert_gating(experts, logits, memory, impl="cuda")
