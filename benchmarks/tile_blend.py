"""Tile blending at a whole-slide shape: reference, per-tile loop, fused.

    python benchmarks/tile_blend.py [--tiles 8] [--channels 6] [--size 256] [--stride 192] [--repeats 10]

Shape: an 8 x 8 grid of 6-channel 256 x 256 tiles at stride 192 (64 tiles, every pixel in
up to four tiles) with a Hann window, blended into the 1600 x 1600 canvas they cover; the
grid starts 32 pixels before the canvas so the first row and column are clipped. Rows time
the forward (``torch.no_grad``, accumulating into one canvas) and the forward+backward
(fresh canvas, gradient to the tiles) of

- ``reference``: the default PyTorch path (one ``index_add_`` over the flattened canvas);
- ``loop``: one clipped slice-add per tile, the common hand-written form;
- ``fused``: the Triton kernels (CUDA only).

Before timing, each implementation's canvas, weight sum and tile gradient are compared
with the reference; a failing check stops the script. The achieved bandwidth counts the
bytes the op must move at least (tiles read once, canvas and weight sum read and written
once; backward: d_canvas read once, d_tiles written once) and is compared with the
device's measured copy bandwidth. Without a GPU only the reference and the loop run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Row, bandwidth_line, copy_bandwidth, device_description, measure  # noqa: E402
from vismtl.ops.tile_blend import blend_tiles, blend_window  # noqa: E402


def make_inputs(grid, channels, size, stride, dtype, device):
    gen = torch.Generator(device="cpu").manual_seed(0)
    tiles = torch.randn(grid * grid, channels, size, size, generator=gen).to(device=device, dtype=dtype)
    starts = torch.arange(grid) * stride - (size - stride) // 2
    ys, xs = torch.meshgrid(starts, starts, indexing="ij")
    offsets = torch.stack([ys.flatten(), xs.flatten()], dim=1).to(device)
    extent = (grid - 1) * stride + size
    return tiles, offsets, blend_window(size, size, "hann", device=device), (channels, extent, extent)


def blend_loop(tiles, offsets, weight, canvas, weight_sum):
    """One clipped slice-add per tile (Python loop over tiles)."""
    h, w = tiles.shape[-2:]
    height, width = weight_sum.shape
    for tile, (y, x) in zip(tiles, offsets.tolist()):
        rows, cols = slice(max(0, -y), min(h, height - y)), slice(max(0, -x), min(w, width - x))
        if rows.start >= rows.stop or cols.start >= cols.stop:
            continue
        target = (slice(y + rows.start, y + rows.stop), slice(x + cols.start, x + cols.stop))
        canvas[(slice(None), *target)] += weight[rows, cols] * tile[:, rows, cols].float()
        weight_sum[target] += weight[rows, cols]
    return canvas, weight_sum


def minimum_bytes(tiles: torch.Tensor, canvas_shape, backward: bool) -> int:
    channels, height, width = canvas_shape
    tile_bytes = tiles.numel() * tiles.element_size()
    forward = tile_bytes + 2 * 4 * (channels + 1) * height * width
    return forward + (tile_bytes + 4 * channels * height * width if backward else 0)


def blend_and_grad(impl, tiles, offsets, weight, canvas_shape):
    """Blend into a fresh canvas and take the gradient of ``sum(canvas * ramp)`` to the tiles."""
    leaf = tiles.detach().requires_grad_()
    canvas = torch.zeros(canvas_shape, device=tiles.device)
    weight_sum = torch.zeros(canvas_shape[1:], device=tiles.device)
    canvas, weight_sum = impl(leaf, offsets, weight, canvas, weight_sum)
    ramp = torch.linspace(-1, 1, canvas.numel(), device=canvas.device).view(canvas.shape)
    (grad,) = torch.autograd.grad((canvas * ramp).sum(), leaf)
    return canvas.detach(), weight_sum, grad


def check(name, impl, inputs) -> None:
    """Canvas, weight sum and tile gradient of ``impl`` against the reference (refuses to time a wrong op)."""
    tolerance = 1e-5 if inputs[0].dtype == torch.float32 else 1e-2
    expected = blend_and_grad(lambda *a: blend_tiles(*a, impl="reference"), *inputs)
    for got, want in zip(blend_and_grad(impl, *inputs), expected):
        error = ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()
        if error > tolerance:
            raise SystemExit(f"{name} differs from the reference by {error:.2e}: refusing to report timings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=8, help="tiles per side of the grid")
    parser.add_argument("--channels", type=int, default=6)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--stride", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    inputs = make_inputs(args.tiles, args.channels, args.size, args.stride, getattr(torch, args.dtype), device)
    tiles, offsets, weight, canvas_shape = inputs
    bandwidth = copy_bandwidth(device)

    impls = {"reference": lambda *a: blend_tiles(*a, impl="reference"), "loop": blend_loop}
    if device.type == "cuda":
        impls["fused"] = lambda *a: blend_tiles(*a, impl="triton")
    for name, impl in impls.items():
        check(name, impl, inputs)

    print(
        f"device: {device_description()}; torch {torch.__version__}; {args.dtype}; copy bandwidth {bandwidth:.1f} GB/s"
    )
    print(f"{len(tiles)} tiles of {tuple(tiles.shape[1:])} at stride {args.stride} into canvas {canvas_shape}")
    print(f"{'op':10s} {'pass':9s} {'median ms':>10s} {'vs reference':>13s} {'GB/s':>8s} {'% of copy':>10s}")
    canvas = torch.zeros(canvas_shape, device=device)
    weight_sum = torch.zeros(canvas_shape[1:], device=device)
    for backward in (False, True):
        rows = []
        for name, impl in impls.items():

            def run(impl=impl, backward=backward):
                if backward:
                    blend_and_grad(impl, *inputs)
                else:
                    impl(tiles, offsets, weight, canvas, weight_sum)

            with torch.set_grad_enabled(backward):
                rows.append(Row(name, measure(run, repeats=args.repeats, warmup=1), 1))
        moved = minimum_bytes(tiles, canvas_shape, backward)
        for row in rows:
            label = f"{row.name:10s} {'fwd+bwd' if backward else 'fwd':9s}"
            print(bandwidth_line(label, row, rows[0], moved, bandwidth))


if __name__ == "__main__":
    main()
