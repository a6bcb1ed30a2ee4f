"""The tile-blending op: autograd function, dispatch (Triton on CUDA, the reference elsewhere), normalise."""

from __future__ import annotations

import torch

from vismtl.ops.tile_blend.reference import blend_tiles_reference, blend_tiles_sliced

IMPLEMENTATIONS = ("auto", "triton", "reference")
TILE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class BlendTilesFunction(torch.autograd.Function):
    """Triton forward (in place into canvas and weight_sum) and backward; inputs are contiguous.

    The canvas is modified in place and returned (``mark_dirty``), so the caller's canvas
    carries the graph: d_tiles is gathered from d_canvas, and the prior canvas gets d_canvas.
    """

    @staticmethod
    def forward(ctx, tiles, offsets, weight, canvas, weight_sum):
        from vismtl.ops.tile_blend import triton_kernels  # Triton is imported only when used

        triton_kernels.blend_forward(tiles, offsets, weight, canvas, weight_sum)
        ctx.save_for_backward(offsets, weight)
        ctx.tiles_meta = (tiles.shape, tiles.dtype)
        if weight_sum is None:
            ctx.mark_dirty(canvas)
            return canvas, None
        ctx.mark_dirty(canvas, weight_sum)
        ctx.mark_non_differentiable(weight_sum)
        return canvas, weight_sum

    @staticmethod
    def backward(ctx, d_canvas: torch.Tensor | None, _d_weight_sum: torch.Tensor | None):
        from vismtl.ops.tile_blend import triton_kernels

        offsets, weight = ctx.saved_tensors
        shape, dtype = ctx.tiles_meta
        d_tiles = None
        if d_canvas is not None and ctx.needs_input_grad[0]:
            out = torch.empty(shape, dtype=dtype, device=d_canvas.device)
            d_tiles = triton_kernels.blend_backward(d_canvas.contiguous(), offsets, weight, shape, out=out)
        return d_tiles, None, None, d_canvas, None


def _validate(tiles, offsets, weight, canvas, weight_sum) -> None:
    if tiles.dim() != 4 or canvas.dim() != 3:
        raise ValueError(
            f"blend_tiles expects tiles [N, C, h, w] and canvas [C, H, W], got {tuple(tiles.shape)} "
            f"and {tuple(canvas.shape)}"
        )
    num_tiles, channels, h, w = tiles.shape
    height, width = canvas.shape[1:]
    if (
        offsets.shape != (num_tiles, 2)
        or weight.shape != (h, w)
        or canvas.shape[0] != channels
        or (weight_sum is not None and weight_sum.shape != (height, width))
    ):
        raise ValueError(
            f"blend_tiles shapes disagree: tiles {tuple(tiles.shape)}, offsets {tuple(offsets.shape)}, "
            f"weight {tuple(weight.shape)}, canvas {tuple(canvas.shape)}, "
            f"weight_sum {None if weight_sum is None else tuple(weight_sum.shape)} "
            "(expected [N, C, h, w], [N, 2], [h, w], [C, H, W], [H, W])"
        )
    if tiles.dtype not in TILE_DTYPES or not weight.is_floating_point():
        raise TypeError(
            f"blend_tiles needs float tiles (float32/bfloat16/float16), got {tiles.dtype}, weight {weight.dtype}"
        )
    if offsets.dtype != torch.int64:
        raise TypeError(f"blend_tiles needs int64 offsets (y, x), got {offsets.dtype}")
    sums = [t for t in (canvas, weight_sum) if t is not None]
    if any(t.dtype != torch.float32 for t in sums):
        raise TypeError(
            f"blend_tiles accumulates in float32, got canvas {canvas.dtype}, "
            f"weight_sum {None if weight_sum is None else weight_sum.dtype}"
        )
    if not all(t.is_contiguous() for t in sums):
        raise ValueError("blend_tiles accumulates in place: canvas and weight_sum must be contiguous")
    devices = {t.device for t in (tiles, offsets, weight, *sums)}
    if len(devices) > 1:
        raise ValueError(f"blend_tiles inputs are on several devices: {sorted(map(str, devices))}")
    if weight.requires_grad and torch.is_grad_enabled():
        raise ValueError("blend_tiles gives the window no gradient: pass weight.detach()")


def blend_tiles(
    tiles: torch.Tensor,
    offsets: torch.Tensor,
    weight: torch.Tensor,
    canvas: torch.Tensor,
    weight_sum: torch.Tensor | None,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Add weighted tiles into a canvas, in place: ``canvas[c, y0+i, x0+j] += weight[i, j] tiles[n, c, i, j]``.

    Args:
        tiles: ``[N, C, h, w]`` model outputs (float32, bfloat16 or float16; summed in float32).
        offsets: ``[N, 2]`` int64 canvas position (y0, x0) of each tile; may be negative or
            put part of a tile past the edge: pixels outside the canvas are dropped.
        weight: ``[h, w]`` blending window (see :func:`blend_window`); gets no gradient.
        canvas: ``[C, H, W]`` float32 accumulator, contiguous.
        weight_sum: ``[H, W]`` float32 accumulator of the window, contiguous; gets no gradient.
            None: not accumulated (disjoint tiles under the flat window, added into a zeroed
            canvas, are copied in exactly: on a GPU one launch per batch instead of a copy per
            tile).
        impl: ``"auto"`` (Triton for CUDA tensors; on the CPU the reference, or its faster
            slice-add form when no gradient is needed), ``"triton"`` or ``"reference"``.

    Returns:
        ``(canvas, weight_sum)``, the same tensors, now carrying the autograd graph from the
        tiles. Divide with :func:`normalise` once every tile is in.
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown impl '{impl}' (use one of {', '.join(IMPLEMENTATIONS)})")
    _validate(tiles, offsets, weight, canvas, weight_sum)
    if impl == "reference" or (impl == "auto" and not tiles.is_cuda):
        needs_grad = torch.is_grad_enabled() and (tiles.requires_grad or canvas.requires_grad)
        # Inference on the CPU (whole-slide runs): slice-adds beat the differentiable scatter.
        blend = blend_tiles_reference if needs_grad or impl == "reference" else blend_tiles_sliced
        blend(tiles, offsets, weight, canvas, weight_sum)
        return canvas, weight_sum
    return BlendTilesFunction.apply(
        tiles.contiguous(), offsets.contiguous(), weight.to(torch.float32).contiguous(), canvas, weight_sum
    )


def normalise(canvas: torch.Tensor, weight_sum: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """``canvas [C, H, W] / weight_sum [H, W]`` where ``weight_sum > eps``, 0 elsewhere (pixels no tile covered)."""
    covered = weight_sum > eps
    # Divide by 1 where uncovered so neither the value nor its gradient becomes inf/nan.
    return torch.where(covered, canvas / torch.where(covered, weight_sum, 1.0), 0.0)


@torch.no_grad()
def normalise_(canvas: torch.Tensor, weight_sum: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """:func:`normalise` in place, for inference: ``canvas`` is overwritten and returned.

    One pass over ``canvas`` (a multiply by the per-pixel reciprocal weight) instead of three
    and no ``[C, H, W]`` temporaries: several times faster on the many-channel canvases of
    whole-slide runs. Equal to :func:`normalise` up to float rounding (exactly where the
    weights are 1).
    """
    scale = torch.where(weight_sum > eps, weight_sum.reciprocal(), 0.0)
    return canvas.mul_(scale)
