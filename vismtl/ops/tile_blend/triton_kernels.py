"""Triton kernels of tile blending: atomic accumulation forward, gather backward.

One program per (tile, block of ``BLOCK_H`` rows, block of ``BLOCK_W`` columns) of the
tile. It loads its tile's offset and the window block once, masks the pixels that fall
outside the canvas, adds the window to ``weight_sum`` and then walks the C channels,
adding ``weight * tile`` into the canvas. Tiles overlap, so the adds are atomic (relaxed:
only the sums matter, not their order; float32 sums may differ from the reference in the
last bits).

Backward (canvas = prior + sum of weighted tiles, so d_prior = d_canvas):

    d_tiles[n, c, i, j] = weight[i, j] * d_canvas[c, y0 + i, x0 + j]   (0 outside the canvas)

a plain gather with no atomics. All tensors are contiguous; canvas offsets are computed in
int64 (whole-slide canvases pass 2^31 elements).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _tile_block(offsets_ptr, weight_ptr, H, W, h, w, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Tile index n, tile-local flat offsets, canvas flat offsets (int64), tile and canvas masks."""
    n = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
    y = tl.load(offsets_ptr + 2 * n) + rows  # int64
    x = tl.load(offsets_ptr + 2 * n + 1) + cols
    in_tile = (rows < h)[:, None] & (cols < w)[None, :]
    in_canvas = in_tile & ((y >= 0) & (y < H))[:, None] & ((x >= 0) & (x < W))[None, :]
    local = rows[:, None] * w + cols[None, :]
    window = tl.load(weight_ptr + local, mask=in_tile, other=0.0)
    return n, local, y[:, None] * W + x[None, :], in_tile, in_canvas, window


@triton.jit
def _blend_forward_kernel(
    tiles_ptr,
    offsets_ptr,
    weight_ptr,
    canvas_ptr,
    weight_sum_ptr,
    C,
    H,
    W,
    plane,
    h,
    w,
    HAS_WEIGHT_SUM: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    n, local, pixel, _, in_canvas, window = _tile_block(offsets_ptr, weight_ptr, H, W, h, w, BLOCK_H, BLOCK_W)
    if HAS_WEIGHT_SUM:
        tl.atomic_add(weight_sum_ptr + pixel, window, mask=in_canvas, sem="relaxed")
    tile_ptrs = tiles_ptr + n * C * h * w + local
    canvas_ptrs = canvas_ptr + pixel
    # Pointers advance one plane per channel (plane = H * W, int64 when large): no c * H * W overflow.
    for _ in range(C):
        value = tl.load(tile_ptrs, mask=in_canvas, other=0.0).to(tl.float32)
        tl.atomic_add(canvas_ptrs, window * value, mask=in_canvas, sem="relaxed")
        tile_ptrs += h * w
        canvas_ptrs += plane


@triton.jit
def _blend_backward_kernel(
    d_canvas_ptr,
    offsets_ptr,
    weight_ptr,
    d_tiles_ptr,
    C,
    H,
    W,
    plane,
    h,
    w,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    n, local, pixel, in_tile, in_canvas, window = _tile_block(offsets_ptr, weight_ptr, H, W, h, w, BLOCK_H, BLOCK_W)
    d_tile_ptrs = d_tiles_ptr + n * C * h * w + local
    d_canvas_ptrs = d_canvas_ptr + pixel
    for _ in range(C):
        grad = tl.load(d_canvas_ptrs, mask=in_canvas, other=0.0).to(tl.float32)
        tl.store(d_tile_ptrs, (window * grad).to(d_tiles_ptr.dtype.element_ty), mask=in_tile)
        d_tile_ptrs += h * w
        d_canvas_ptrs += plane


def _grid(num_tiles: int, h: int, w: int) -> tuple[tuple[int, int, int], dict[str, int]]:
    # 16 x 64 pixels per program: rows of 64 contiguous floats keep loads and atomics coalesced.
    block_w = min(64, triton.next_power_of_2(w))
    block_h = max(1, min(triton.next_power_of_2(h), 1024 // block_w))
    grid = (num_tiles, triton.cdiv(h, block_h), triton.cdiv(w, block_w))
    return grid, dict(BLOCK_H=block_h, BLOCK_W=block_w)


def blend_forward(
    tiles: torch.Tensor,
    offsets: torch.Tensor,
    weight: torch.Tensor,
    canvas: torch.Tensor,
    weight_sum: torch.Tensor | None,
) -> None:
    """tiles [N, C, h, w], offsets [N, 2] int64, weight [h, w] float32 -> accumulated into
    canvas [C, H, W] and weight_sum [H, W] (float32; None: not accumulated), in place. All
    contiguous, one device.

    The canvas is the output buffer: elements that no tile pixel lands on keep their value.
    """
    num_tiles, channels, h, w = tiles.shape
    _, height, width = canvas.shape
    if tiles.numel() == 0:
        return
    grid, meta = _grid(num_tiles, h, w)
    has_weight_sum = weight_sum is not None
    _blend_forward_kernel[grid](
        tiles,
        offsets,
        weight,
        canvas,
        weight_sum if has_weight_sum else canvas,  # not touched without weights
        channels,
        height,
        width,
        height * width,
        h,
        w,
        HAS_WEIGHT_SUM=has_weight_sum,
        **meta,
    )


def blend_backward(
    d_canvas: torch.Tensor,
    offsets: torch.Tensor,
    weight: torch.Tensor,
    tile_shape: tuple[int, int, int, int],
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """d_canvas [C, H, W] (contiguous) -> d_tiles ``tile_shape`` = [N, C, h, w].

    ``out`` (optional) is the output buffer (its dtype is the gradient's); tests pass a
    NaN-filled one to catch unwritten elements. Without it the gradient is float32.
    """
    num_tiles, channels, h, w = tile_shape
    _, height, width = d_canvas.shape
    if out is None:
        out = torch.empty(tile_shape, dtype=torch.float32, device=d_canvas.device)
    if out.numel() == 0:
        return out
    grid, meta = _grid(num_tiles, h, w)
    _blend_backward_kernel[grid](d_canvas, offsets, weight, out, channels, height, width, height * width, h, w, **meta)
    return out
