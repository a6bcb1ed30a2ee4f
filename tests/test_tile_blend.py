"""Tile blending: the Triton kernels equal the PyTorch reference, and blending is exact where it must be.

On the CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set in conftest);
where CUDA is available every tensor goes to the GPU, so the same tests check the compiled kernels.
Tile sizes are not multiples of the blocks; offsets are negative, past the edge, fully
outside and overlapping. The forward's canvas sits between guard bands (nothing may be
written outside it); the backward's output buffer is filled with NaN first.
"""

from __future__ import annotations

import pytest
import torch

from conftest import KERNEL_DEVICE as DEVICE
from vismtl.ops.tile_blend import (
    blend_tiles,
    blend_tiles_reference,
    blend_window,
    normalise,
    normalise_,
    triton_kernels,
)

# (N, C, h, w, H, W): tiles 37 x 29 on 61 x 83; one 70-wide row spanning two column blocks.
SHAPES = [(5, 3, 37, 29, 61, 83), (4, 2, 1, 70, 3, 50)]
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-3}
IMPLS = ["triton", "reference"]
GUARD = 64


def make_offsets(num_tiles, h, w, height, width, gen):
    """Offsets from half a tile before the canvas to past its far edge, plus one tile fully outside."""
    ys = torch.randint(-h // 2, height, (num_tiles,), generator=gen)
    xs = torch.randint(-w // 2, width, (num_tiles,), generator=gen)
    offsets = torch.stack([ys, xs], dim=1)
    offsets[0] = torch.tensor([-3, -4])  # top-left corner cut off
    offsets[-1] = torch.tensor([height + 1, -w - 2])  # entirely outside
    return offsets


def inputs(num_tiles, channels, h, w, height, width, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tiles = torch.randn(num_tiles, channels, h, w, generator=gen).to(dtype)
    offsets = make_offsets(num_tiles, h, w, height, width, gen)
    return tiles.to(DEVICE), offsets.to(DEVICE), blend_window(h, w, "hann", margin=min(h, w) // 4, device=DEVICE)


def guarded(prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``prior`` copied into the middle of a buffer whose guard bands hold a sentinel: (buffer, view)."""
    buffer = torch.full((prior.numel() + 2 * GUARD,), 1234.5, device=DEVICE)
    buffer[GUARD:-GUARD] = prior.flatten()
    return buffer, buffer[GUARD:-GUARD].view(prior.shape)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.float()
    return ((actual.float() - expected).abs().max() / expected.abs().max().clamp(min=1e-12)).item()


def crops(image: torch.Tensor, offsets: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``[N, C, h, w]`` windows of ``image [C, H, W]`` at ``offsets`` (zeros outside the image)."""
    pad = max(h, w)
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))
    return torch.stack([padded[:, y + pad : y + pad + h, x + pad : x + pad + w] for y, x in offsets.tolist()])


def grid_offsets(start: int, strides: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """``[N, 2]`` row-major grid of offsets from (start, start) until past (height, width)."""
    ys = torch.arange(start, height, strides[0])
    xs = torch.arange(start, width, strides[1])
    ys, xs = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([ys.flatten(), xs.flatten()], dim=1).to(DEVICE)


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_sums", [True, False], ids=["weight_sum", "no_weight_sum"])
def test_forward_matches_reference(shape, dtype, with_sums):
    """With weight_sum=None the canvas gets the same sums, and nothing else is written."""
    tiles, offsets, weight = inputs(*shape, dtype)
    channels, height, width = shape[1], *shape[-2:]
    prior = torch.randn(channels, height, width, generator=torch.Generator().manual_seed(9)).to(DEVICE)
    canvas_buffer, canvas = guarded(prior)
    sum_buffer, weight_sum = guarded(torch.ones(height, width)) if with_sums else (None, None)
    triton_kernels.blend_forward(tiles, offsets, weight, canvas, weight_sum)

    expected, expected_sum = prior.clone(), torch.ones(height, width, device=DEVICE)
    blend_tiles_reference(tiles, offsets, weight, expected, expected_sum)
    assert relative_error(canvas, expected) < TOLERANCE[dtype]
    if with_sums:
        assert relative_error(weight_sum, expected_sum) < 1e-6
    else:  # the reference without sums: the same canvas
        alone = prior.clone()
        blend_tiles_reference(tiles, offsets, weight, alone, None)
        assert torch.equal(alone, expected)
    for buffer in (canvas_buffer, sum_buffer) if with_sums else (canvas_buffer,):
        assert (buffer[:GUARD] == 1234.5).all() and (buffer[-GUARD:] == 1234.5).all(), "wrote outside the canvas"
    hits = torch.zeros(height, width, device=DEVICE)
    ones = torch.ones(len(tiles), 1, *tiles.shape[-2:], device=DEVICE)
    blend_tiles_reference(ones, offsets, weight, hits[None], hits)
    assert torch.equal(canvas[:, hits == 0], prior[:, hits == 0]), "changed pixels no tile covers"


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_reference(shape, dtype):
    tiles, offsets, weight = inputs(*shape, dtype, seed=1)
    channels, height, width = shape[1], *shape[-2:]
    d_canvas = torch.randn(channels, height, width, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    d_tiles = triton_kernels.blend_backward(
        d_canvas, offsets, weight, tiles.shape, out=torch.full_like(tiles, torch.nan)
    )

    # The reference's autograd, and the op's autograd function with the tiles blended in two calls.
    grads = {}
    for impl in IMPLS:
        leaf = tiles.clone().requires_grad_()
        prior = torch.randn(channels, height, width, device=DEVICE).requires_grad_()
        canvas, weight_sum = prior.clone(), torch.zeros(height, width, device=DEVICE)
        for part in (slice(0, 2), slice(2, None)):
            canvas, weight_sum = blend_tiles(leaf[part], offsets[part], weight, canvas, weight_sum, impl=impl)
        assert not weight_sum.requires_grad
        grads[impl] = torch.autograd.grad((canvas * d_canvas).sum(), [leaf, prior])
    assert not d_tiles.isnan().any(), "unwritten elements in d_tiles"
    assert relative_error(d_tiles, grads["reference"][0]) < TOLERANCE[dtype]
    assert relative_error(grads["triton"][0], grads["reference"][0]) < TOLERANCE[dtype]
    assert torch.equal(grads["triton"][1], d_canvas) and torch.equal(grads["reference"][1], d_canvas)
    assert grads["triton"][0].dtype == dtype


@pytest.mark.parametrize("impl", IMPLS)
def test_disjoint_tiles_are_copied_exactly_without_weight_sum(impl):
    """The slide engine's copy of disjoint tiles: a zeroed canvas, the flat window, no weights.
    Every covered pixel is its tile's value bit for bit; the rest stays 0."""
    image = torch.randn(3, 21, 20, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    offsets = grid_offsets(0, (7, 5), 19, 18)[1:]  # the first tile left out
    canvas = torch.zeros(3, 19, 18, device=DEVICE)
    window = blend_window(7, 5, "ones", device=DEVICE)
    assert blend_tiles(crops(image, offsets, 7, 5), offsets, window, canvas, None, impl=impl)[1] is None
    assert torch.equal(canvas[:, 7:, :], image[:, 7:19, :18]) and torch.equal(canvas[:, :, 5:], image[:, :19, 5:18])
    assert (canvas[:, :7, :5] == 0).all()
    with torch.inference_mode():  # the engine's mode; the sliced CPU path
        again = torch.zeros(3, 19, 18, device=DEVICE)
        blend_tiles(crops(image, offsets, 7, 5), offsets, window, again, None, impl=impl)
    assert torch.equal(again, canvas)


@pytest.mark.parametrize("impl", IMPLS)
def test_non_overlapping_tiles_with_ones_window_are_reproduced_exactly(impl):
    """A 3 x 4 grid of 7 x 5 tiles on a 19 x 18 canvas (the last row and column overhang)."""
    image = torch.randn(2, 21, 20, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    offsets = grid_offsets(0, (7, 5), 19, 18)
    canvas, weight_sum = torch.zeros(2, 19, 18, device=DEVICE), torch.zeros(19, 18, device=DEVICE)
    window = blend_window(7, 5, "ones", device=DEVICE)
    blend_tiles(crops(image, offsets, 7, 5), offsets, window, canvas, weight_sum, impl=impl)
    assert torch.equal(weight_sum, torch.ones(19, 18, device=DEVICE))
    assert torch.equal(normalise(canvas, weight_sum), image[:, :19, :18])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind, margin", [("hann", 0), ("hann", 2), ("ones", 0), ("center", 4)])
def test_overlapping_crops_of_one_image_normalise_back_to_it(kind, margin, impl):
    image = torch.randn(2, 30, 37, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    offsets = grid_offsets(-4, (8, 8), 30, 37)  # 16 x 16 tiles at stride 8: every pixel in two to four tiles
    canvas, weight_sum = torch.zeros(2, 30, 37, device=DEVICE), torch.zeros(30, 37, device=DEVICE)
    tiles, window = crops(image, offsets, 16, 16), blend_window(16, 16, kind, margin, device=DEVICE)
    blend_tiles(tiles, offsets, window, canvas, weight_sum, impl=impl)
    assert (weight_sum > 0).all()
    torch.testing.assert_close(normalise(canvas, weight_sum), image, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_center_window_at_its_own_stride_takes_each_pixel_from_one_tile(impl):
    """11 x 11 tiles keeping their central 5 x 5, laid at stride 5: pixel (y, x) is tile (y // 5, x // 5)'s."""
    height, width, margin, core = 23, 17, 3, 5
    offsets = grid_offsets(-margin, (core, core), height - margin, width - margin)
    columns = len(range(-margin, width - margin, core))
    tiles = torch.randn(len(offsets), 2, 11, 11, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    canvas, weight_sum = torch.zeros(2, height, width, device=DEVICE), torch.zeros(height, width, device=DEVICE)
    blend_tiles(tiles, offsets, blend_window(11, 11, "center", margin, device=DEVICE), canvas, weight_sum, impl=impl)
    ys, xs = torch.meshgrid(torch.arange(height, device=DEVICE), torch.arange(width, device=DEVICE), indexing="ij")
    expected = tiles[(ys // core) * columns + xs // core, :, ys % core + margin, xs % core + margin].permute(2, 0, 1)
    assert torch.equal(weight_sum, torch.ones(height, width, device=DEVICE))
    assert torch.equal(canvas, expected) and torch.equal(normalise(canvas, weight_sum), expected)


@pytest.mark.parametrize("impl", IMPLS)
def test_pixels_outside_the_canvas_are_dropped(impl):
    num_tiles, channels, h, w, height, width = SHAPES[0]
    tiles, offsets, weight = inputs(*SHAPES[0], torch.float32, seed=6)
    tiles[-1], tiles[0, :, 0, 0] = torch.nan, torch.inf  # the whole tile, and a pixel, outside the canvas
    canvas, weight_sum = torch.zeros(channels, height, width, device=DEVICE), torch.zeros(height, width, device=DEVICE)
    blend_tiles(tiles, offsets, weight, canvas, weight_sum, impl=impl)
    expected_weight, expected_canvas = 0.0, torch.zeros(channels, dtype=torch.float64, device=DEVICE)
    for tile, (y, x) in zip(tiles.double(), offsets.tolist()):  # clip each tile by hand
        rows = slice(max(0, -y), max(0, min(h, height - y)))
        cols = slice(max(0, -x), max(0, min(w, width - x)))
        expected_weight += weight[rows, cols].double().sum().item()
        expected_canvas += (weight.double() * tile)[:, rows, cols].sum(dim=(1, 2))
    assert canvas.isfinite().all(), "values outside the canvas leaked in"
    assert abs(weight_sum.double().sum().item() - expected_weight) < 1e-5 * expected_weight
    torch.testing.assert_close(canvas.double().sum(dim=(1, 2)), expected_canvas, rtol=1e-5, atol=1e-4)


def test_normalise_gives_zero_and_finite_gradients_where_nothing_was_blended():
    canvas = torch.tensor([[[2.0, 0.0, 3.0]]], requires_grad=True)
    weight_sum = torch.tensor([[4.0, 0.0, 0.5]])
    out = normalise(canvas, weight_sum)
    (grad,) = torch.autograd.grad(out.sum(), canvas)
    assert torch.equal(out, torch.tensor([[[0.5, 0.0, 6.0]]]))
    assert torch.equal(grad, torch.tensor([[[0.25, 0.0, 2.0]]]))


def test_blend_windows():
    hann = blend_window(12, 9, "hann")
    assert hann.shape == (12, 9) and (hann > 0).all() and torch.equal(hann, hann.flip(0).flip(1))
    rows = blend_window(12, 1, "hann")[:, 0]
    torch.testing.assert_close(rows[:6] + rows[6:], torch.ones(6))  # shifted by half: a partition of unity
    assert (blend_window(12, 9, "hann", margin=2)[:2] == 0).all()
    center = blend_window(448, 448, "center", margin=152)
    assert center.sum() == 144 * 144 and center[152:296, 152:296].all()
    assert torch.equal(blend_window(3, 4, "ones"), torch.ones(3, 4))
    with pytest.raises(ValueError, match="unknown window 'gauss'"):
        blend_window(4, 4, "gauss")
    with pytest.raises(ValueError, match="leaves no interior"):
        blend_window(4, 8, "center", margin=2)


def test_bad_inputs_are_named():
    tiles, offsets, weight = inputs(3, 2, 5, 4, 9, 9, torch.float32)
    canvas, weight_sum = torch.zeros(2, 9, 9, device=DEVICE), torch.zeros(9, 9, device=DEVICE)
    with pytest.raises(ValueError, match="blend_tiles shapes disagree"):
        blend_tiles(tiles, offsets, weight.T, canvas, weight_sum)
    with pytest.raises(TypeError, match="int64 offsets"):
        blend_tiles(tiles, offsets.int(), weight, canvas, weight_sum)
    with pytest.raises(TypeError, match="accumulates in float32"):
        blend_tiles(tiles, offsets, weight, canvas.double(), weight_sum)
    with pytest.raises(ValueError, match="must be contiguous"):
        blend_tiles(tiles, offsets, weight, canvas.transpose(1, 2), weight_sum)
    with pytest.raises(ValueError, match="gives the window no gradient"):
        blend_tiles(tiles, offsets, weight.requires_grad_(), canvas, weight_sum)
    with pytest.raises(ValueError, match="unknown impl 'cuda'"):
        blend_tiles(tiles, offsets, weight, canvas, weight_sum, impl="cuda")


def test_sliced_inference_path_equals_the_reference():
    """The no-grad CPU fast path (one slice-add per tile) accumulates exactly what the reference does."""
    from vismtl.ops.tile_blend.reference import blend_tiles_sliced

    gen = torch.Generator().manual_seed(7)
    tiles = torch.randn(6, 2, 13, 17, generator=gen)
    offsets = torch.tensor([[-3, -5], [0, 0], [10, 30], [20, 40], [27, 50], [-20, 90]])
    weight = blend_window(13, 17, "hann")
    expected = (torch.zeros(2, 30, 60), torch.zeros(30, 60))
    got = (torch.zeros(2, 30, 60), torch.zeros(30, 60))
    blend_tiles_reference(tiles, offsets, weight, *expected)
    blend_tiles_sliced(tiles, offsets, weight, *got)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-6, atol=1e-6)


def test_in_place_normalise_equals_normalise():
    torch.manual_seed(0)
    canvas, weight_sum = torch.rand(5, 33, 40) * 3, torch.rand(33, 40) * 2
    weight_sum[4:9, 7:20] = 0.0  # nothing blended there
    weight_sum[20:, :] = 1.0
    expected = normalise(canvas, weight_sum)
    out = normalise_(canvas, weight_sum)
    assert out.data_ptr() == canvas.data_ptr()  # in place
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=0)
    assert (out[:, 4:9, 7:20] == 0).all() and torch.equal(out[:, 20:], expected[:, 20:])


def test_chunk_canvas_copies_disjoint_tiles_as_blending_would():
    """Disjoint tiles under the flat window: the copy path equals blend + normalise, exactly,
    including tiles cut by the region border and a recycled buffer holding old values."""
    from vismtl.wsi.stitch import ChunkCanvas

    torch.manual_seed(0)
    region, channels = (10, 20, 10 + 90, 20 + 70), {"a": 2, "b": 1}
    # 32 px tiles on a grid offset from the region, some cut by its border; (32, 40) left out
    positions = torch.tensor([[y, x] for y in (0, 32, 64, 96) for x in (8, 40, 72) if (y, x) != (32, 40)])
    outputs = {"a": torch.rand(11, 2, 32, 32), "b": torch.rand(11, 1, 32, 32)}
    blended = ChunkCanvas(region, channels, 32, "ones", "cpu")
    stale = (torch.full((3, 90, 70), 7.0), None)
    copied = ChunkCanvas(region, channels, 32, "ones", "cpu", recycled=stale, disjoint=True)
    for canvas in (blended, copied):
        canvas.add(outputs, positions)
    assert copied.weight_sum is None and copied.sums.data_ptr() == stale[0].data_ptr()
    expected, got = blended.result(), copied.result()
    assert all(torch.equal(expected[t], got[t]) for t in channels)
    assert got["b"][0, 0, 0, 0] == outputs["b"][0, 0, 10, 12]  # the first tile starts 10 rows, 12 columns out
    assert (got["a"][0, :, 22:54, 20:52] == 0).all()  # the missing tile: stale values gone, nothing blended
