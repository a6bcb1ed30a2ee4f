"""The model's forward and its tasks' activations replayed as a CUDA graph (``wsi.cuda_graph``).

On a GPU the slide engine's one process launches every kernel of the model from Python, beside
the threads that read, stitch and write, all taking turns at one GIL: with the histology
quickstart on an H200, 40 % of the engine's main thread went to the model's Python and launches
(docs/benchmarks.md, section "GPU"). A CUDA graph, captured at the first batch, launches them
all at once. A graph has fixed shapes, so every batch is padded to the batch size; its outputs
live in the graph's own buffers, which the next replay overwrites, so the rows of a batch are
copied out (one copy per task, against the model's hundreds of launches).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class GraphedForward:
    """``forward`` (images ``[B, ...]`` -> ``{name: [B, ...]}``) captured for batches of ``size``
    images like ``images`` (shape, layout, device); called with at most ``size`` images, it replays
    the graph on them (zero images after them) and returns fresh tensors of their rows.

    ``forward`` must not synchronise with the host (no ``.item()``, no shapes read from values):
    capturing then fails. Under autocast it needs ``cache_enabled=False`` (a cached cast made
    while capturing would be freed).
    """

    def __init__(self, forward: Forward, images: torch.Tensor, size: int, warmup: int = 3) -> None:
        if not images.is_cuda:
            raise ValueError(f"a CUDA graph needs images on a CUDA device, not {images.device}")
        self.size = size
        self._input = padded(images, size)  # the graph's input buffer, in the images' layout
        # A few runs on a side stream first: lazy initialisations (cuDNN's choice of algorithm,
        # workspaces) must not happen while capturing.
        device = images.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                forward(self._input)
        torch.cuda.current_stream(device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        # Only this thread's calls are checked while capturing: the engine's writer and stitching
        # threads keep using the GPU on streams of their own meanwhile (a check of every thread
        # would fail their allocations and copies).
        with torch.cuda.graph(self._graph, capture_error_mode="thread_local"):
            self._outputs = forward(self._input)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        count = len(images)
        if not 0 < count <= self.size:
            raise ValueError(f"a batch of {count} images for a graph of {self.size}")
        self._input[:count].copy_(images)
        if count < self.size:
            self._input[count:].zero_()
        self._graph.replay()
        return {name: value[:count].clone() for name, value in self._outputs.items()}


class ModelGraph:
    """The slide engine's graphs of ``forward``, one per kind of batch (batch size, tile, layout,
    autocast; the last ``kept`` kinds), each captured at the first batch of its kind. Where capturing
    fails, ``None`` for batches of that kind (the caller runs the model as it is), with one warning."""

    def __init__(self, forward: Forward, kept: int = 4) -> None:
        self.forward, self.kept = forward, kept
        self._graphs: dict[tuple, GraphedForward | None] = {}  # oldest first

    def __call__(self, images: torch.Tensor, size: int, *extra) -> dict[str, torch.Tensor] | None:
        key = graph_key(images, size, *extra)
        if key not in self._graphs:
            while len(self._graphs) >= self.kept:  # the oldest kind's buffers go before new ones come
                del self._graphs[next(iter(self._graphs))]
            try:
                self._graphs[key] = GraphedForward(self.forward, images, size)
            except Exception as err:  # noqa: BLE001 -- any capture failure: the model runs as it is
                first_line = (str(err).strip().splitlines() or [""])[0]
                log.warning(
                    "the model could not be captured as a CUDA graph and runs as it is: %s: %s",
                    type(err).__name__,
                    first_line,
                )
                self._graphs[key] = None
        graph = self._graphs[key]
        return None if graph is None else graph(images)


def graph_key(images: torch.Tensor, size: int, *extra) -> tuple:
    """What a graph of batches of ``size`` images like ``images`` fixes: their shape, memory layout,
    dtype and device (and ``extra``, such as autocast)."""
    return (size, tuple(images.shape[1:]), images.stride()[1:], images.dtype, images.device, *extra)


def padded(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images [n, C, H, W]`` (n <= ``size``) followed by zero images up to ``size``, in a new tensor
    of their memory layout (the engine's are channels-last). A compiled model then sees one shape,
    one layout and, made in inference mode, one kind of tensor (a chunk's own tiles are not one),
    so it runs the graph it compiled at the first batch instead of compiling others; a CUDA graph
    keeps it as its input buffer."""
    order = sorted(range(4), key=lambda d: -images.stride(d))  # outermost dimension first
    shape = [size if d == 0 else images.shape[d] for d in order]
    out = images.new_empty(shape).permute(*[order.index(d) for d in range(4)])
    out[: len(images)] = images
    out[len(images) :] = 0
    return out
