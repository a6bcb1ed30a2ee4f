"""Generated whole-slide images: tiled, JPEG-compressed pyramidal TIFFs that OpenSlide reads.

Used by the tests and the benchmarks (memory, throughput) so that slides of any size exist
without a download. Content is drawn on demand, tile by tile, so a 100,000 x 100,000 slide
never exists in memory: ``content(y, x, height, width, downsample)`` returns the RGB of a
region of the level with that downsample, or None for blank glass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tifffile

Content = Callable[[int, int, int, int, int], "np.ndarray | None"]
GLASS = (243, 243, 243)


def write_slide(
    path: str | Path,
    height: int,
    width: int,
    content: Content,
    mpp: float = 0.5,
    tile: int = 512,
    downsamples: Sequence[int] = (1, 4, 16, 64),
    quality: int = 90,
    compression: str = "jpeg",
) -> Path:
    """Write a generic tiled pyramidal TIFF (one IFD per level, resolution tags giving ``mpp``).

    ``compression`` is ``"jpeg"`` (at ``quality``) like scanners, or ``"zlib"`` (lossless).
    """
    path = Path(path)
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        for level, down in enumerate(d for d in downsamples if min(height, width) // d >= 1):
            h, w = max(1, height // down), max(1, width // down)
            pixels_per_cm = 10_000 / (mpp * down)
            writer.write(
                _tiles(content, h, w, down, tile),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression=compression,
                compressionargs={"level": quality} if compression == "jpeg" else None,
                photometric="rgb",
                subfiletype=0 if level == 0 else 1,
                resolution=(pixels_per_cm, pixels_per_cm),
                resolutionunit="CENTIMETER",
            )
    return path


def _tiles(content: Content, height: int, width: int, down: int, tile: int) -> Iterator[np.ndarray]:
    blank = np.empty((tile, tile, 3), np.uint8)
    blank[:] = GLASS
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            region = content(y, x, min(tile, height - y), min(tile, width - x), down)
            if region is None:
                yield blank
                continue
            out = blank.copy()
            out[: region.shape[0], : region.shape[1]] = region
            yield out


def tissue_boxes_content(boxes: Sequence[tuple[int, int, int, int]], seed: int = 0, cell: int = 256) -> Content:
    """H&E-like generated tissue (``vismtl.data.tissue_renderer``) inside level-0 ``boxes`` (y0, x0, y1, x1)."""
    import cv2

    from vismtl.data.tissue_renderer import render_tissue

    def content(y: int, x: int, height: int, width: int, down: int) -> np.ndarray | None:
        y0, x0, y1, x1 = y * down, x * down, (y + height) * down, (x + width) * down
        hits = [b for b in boxes if b[0] < y1 and b[2] > y0 and b[1] < x1 and b[3] > x0]
        if not hits:
            return None
        full = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        full[:] = GLASS
        for by0, bx0, by1, bx1 in hits:
            for cy in range(max(by0, y0) // cell * cell, min(by1, y1), cell):
                for cx in range(max(bx0, x0) // cell * cell, min(bx1, x1), cell):
                    index = (cy // cell) * 100_003 + cx // cell
                    patch = render_tissue(seed, index, cell, cell)["image"]
                    ys, xs = max(cy, by0, y0), max(cx, bx0, x0)
                    ye, xe = min(cy + cell, by1, y1), min(cx + cell, bx1, x1)
                    full[ys - y0 : ye - y0, xs - x0 : xe - x0] = patch[ys - cy : ye - cy, xs - cx : xe - cx]
        if down == 1:
            return full
        return cv2.resize(full, (width, height), interpolation=cv2.INTER_AREA)

    return content
