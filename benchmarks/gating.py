"""The expert-gating op at the PASCAL-Context and NYUD-v2 ViT-L shapes: reference, naive, fused.

    python benchmarks/gating.py [--experts 8] [--channels 256] [--repeats 20] [--dtype float32]

Shapes: batch 2 of 32x32 tokens with 5 tasks (PASCAL, 512x512 input) and of 28x36 tokens
with 4 tasks (NYUD, 448x576 input). Rows time the forward and the forward+backward of

- ``reference``: the default PyTorch path (one batched matmul per row, float32 math);
- ``naive``: the straightforward broadcast-and-sum that materialises [B, P, T, N, D];
- ``fused``: the Triton kernels (CUDA only).

Before timing, each implementation's outputs and gradients are compared with the
reference; a failing check stops the script. The achieved bandwidth counts the bytes the
op must move at least (inputs read once, outputs written once) and is compared with the
device's measured copy bandwidth. Without a GPU only the reference and the naive form
run, and the table shows whether the default path is at least as fast as the naive one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Row, bandwidth_line, copy_bandwidth, device_description, measure  # noqa: E402
from vismtl.ops.expert_gating import expert_gating, expert_gating_naive, expert_gating_reference  # noqa: E402

SHAPES = {"PASCAL ViT-L": (2, 32 * 32, 5), "NYUD ViT-L": (2, 28 * 36, 4)}


def make_inputs(batch, pixels, tasks, experts, channels, dtype, device):
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype).requires_grad_()

    return (
        rand(batch, pixels, experts, channels),
        rand(batch, pixels, tasks, experts + 1),
        rand(batch, pixels, tasks, channels),
    )


def minimum_bytes(batch, pixels, tasks, experts, channels, element: int, backward: bool) -> int:
    rows = batch * pixels
    forward = rows * (experts * channels + tasks * (experts + 1) + tasks * channels + 2 * tasks * channels)
    if not backward:
        return forward * element
    # backward reads the three inputs and the two output gradients, writes three gradients
    back = rows * (2 * (experts * channels + tasks * (experts + 1) + tasks * channels) + 2 * tasks * channels)
    return (forward + back) * element


def check(impl, inputs, reference) -> None:
    """Outputs and gradients of ``impl`` against the reference (refuses to time a wrong op)."""
    tolerance = 1e-4 if inputs[0].dtype == torch.float32 else 2e-2
    outputs = impl(*inputs)
    grads = torch.autograd.grad(sum((o.float() * (k + 1)).sum() for k, o in enumerate(outputs)), inputs)
    ref_out = reference(*inputs)
    ref_grads = torch.autograd.grad(sum((o.float() * (k + 1)).sum() for k, o in enumerate(ref_out)), inputs)
    for got, want in zip([*outputs, *grads], [*ref_out, *ref_grads]):
        error = ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()
        if error > tolerance:
            raise SystemExit(f"{impl.__name__} differs from the reference by {error:.2e}: refusing to report timings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    element = torch.tensor([], dtype=dtype).element_size()
    bandwidth = copy_bandwidth(device)

    def fused(e, l, m):
        return expert_gating(e, l, m, impl="triton")

    impls = {"reference": expert_gating_reference, "naive": expert_gating_naive}
    if device.type == "cuda":
        impls["fused"] = fused

    print(
        f"device: {device_description()}; torch {torch.__version__}; {args.dtype}; copy bandwidth {bandwidth:.1f} GB/s"
    )
    print(
        f"{'shape':14s} {'op':10s} {'pass':9s} {'median ms':>10s} {'vs reference':>13s} {'GB/s':>8s} {'% of copy':>10s}"
    )
    for shape_name, (batch, pixels, tasks) in SHAPES.items():
        inputs = make_inputs(batch, pixels, tasks, args.experts, args.channels, dtype, device)
        for impl in impls.values():
            check(impl, inputs, expert_gating_reference)
        for backward in (False, True):
            rows = []
            for name, impl in impls.items():

                def run(impl=impl, inputs=inputs, backward=backward):
                    outputs = impl(*inputs)
                    if backward:
                        torch.autograd.grad([o.sum() for o in outputs], inputs)

                with torch.set_grad_enabled(backward):
                    rows.append(Row(name, measure(run, repeats=args.repeats, warmup=3), 1))
            moved = minimum_bytes(batch, pixels, tasks, args.experts, args.channels, element, backward)
            for row in rows:
                label = f"{shape_name:14s} {row.name:10s} {'fwd+bwd' if backward else 'fwd':9s}"
                print(bandwidth_line(label, row, rows[0], moved, bandwidth))


if __name__ == "__main__":
    main()
