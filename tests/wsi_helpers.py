"""Test helpers for whole-slide inference: a slide whose pixels encode instance targets, and its oracle."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vismtl.tasks import instance_targets as it
from vismtl.wsi.synthetic import write_slide

# Grey levels of background / interior / contour: far apart, so they survive any resampling.
LEVELS = (243, 30, 140)


def ellipses(
    height: int, width: int, count: int, seed: int, borders: int = 256, axes: tuple[int, int] = (6, 17), gap: int = 3
) -> np.ndarray:
    """Non-overlapping ellipses (ids 1..K, semi-axes in ``[axes[0], axes[1])``, at least ``gap`` px
    apart), about a third of them centred on multiples of ``borders``."""
    import cv2

    rng = np.random.default_rng(seed)
    inst = np.zeros((height, width), np.int32)
    placed = 0
    for attempt in range(count * 20):
        if placed == count:
            break
        if attempt % 3 == 0:  # on a tile / chunk border (or corner)
            cy = int(rng.integers(1, height // borders + 1)) * borders + int(rng.integers(-2, 3))
            cx = int(rng.integers(1, width // borders + 1)) * borders + int(rng.integers(-2, 3))
        else:
            cy, cx = int(rng.integers(20, height - 20)), int(rng.integers(20, width - 20))
        semi_axes = (int(rng.integers(*axes)), int(rng.integers(*axes)))
        canvas = np.zeros_like(inst, np.uint8)
        cv2.ellipse(canvas, (cx, cy), semi_axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        grown = cv2.dilate(canvas, np.ones((2 * gap + 1, 2 * gap + 1), np.uint8)) > 0
        if canvas.any() and not (grown & (inst > 0)).any():
            placed += 1
            inst[canvas > 0] = placed
    return inst


def write_label_slide(path: Path, inst: np.ndarray, mpp: float = 0.5) -> Path:
    """A lossless pyramidal TIFF whose grey levels are the 3-class targets of ``inst`` (band 3)."""
    classes = it.instance_to_classes(inst, 3)
    grey = np.asarray(LEVELS, np.uint8)[classes]

    def content(y, x, height, width, down):
        block = grey[y * down : (y + height) * down : down, x * down : (x + width) * down : down]
        return np.repeat(block[..., None], 3, axis=2)

    return write_slide(path, *inst.shape, content, mpp=mpp, tile=256, downsamples=(1, 4), compression="zlib")


class GreyOracle(nn.Module):
    """'Predicts' the 3-class map a label slide encodes: the nearest grey level, as confident logits."""

    def __init__(self, task: str = "nuclei") -> None:
        super().__init__()
        self.task = task
        self.register_buffer("levels", torch.tensor(LEVELS, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        grey = image.float().mean(dim=1, keepdim=True)
        distance = (grey - self.levels).abs()
        return {self.task: -distance}  # the nearest level wins by a wide margin


def damage_tile(path: Path, index: int) -> None:
    """Overwrite stored tile ``index`` of the TIFF's full-resolution level: it no longer decodes."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[index], tif.pages[0].databytecounts[index]
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(b"\0" * count)


def gpu_cycles(seconds: float) -> int:
    """Clock cycles that ``torch.cuda._sleep`` spins for about ``seconds`` on this GPU (measured)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(10**8)
    end.record()
    end.synchronize()
    return int(seconds * 10**8 / (start.elapsed_time(end) / 1000))


def process_and_tasks(tasks) -> tuple[int, list[str]]:
    """Where :meth:`ChunkFinisher.call` ran this, and the tasks it was given."""
    return os.getpid(), sorted(tasks)


def failing_conclusion(tasks, path: str) -> None:
    """A conclusion that meets a damaged file (as :meth:`ChunkFinisher.call` would run it)."""
    raise ValueError(f"cannot read the object pieces in {path}")


def dying_conclusion(tasks) -> None:
    """A conclusion whose process dies (killed, out of memory)."""
    os._exit(1)


def logging_conclusion(tasks) -> int:
    """A conclusion that logs at three levels (as :meth:`ChunkFinisher.call` would run it)."""
    log = logging.getLogger("vismtl")
    log.warning("slide %s: %d tiles left white", "a", 3)
    log.info("slide a: 2 objects put together from pieces")
    log.debug("slide a: details nobody asked for")
    return os.getpid()
