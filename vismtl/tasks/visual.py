"""Colour helpers shared by the tasks' ``visualize`` functions."""

from __future__ import annotations

import cv2
import numpy as np


def label_palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: bit-interleaved, distinct for small ids. ``[N, 3]`` uint8."""
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (r, g, b)
    return palette


PALETTE = label_palette()


def colorize_labels(labels: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Class ids ``[H, W]`` -> RGB; ignored pixels are white."""
    labels = np.asarray(labels).astype(np.int64)
    rgb = PALETTE[np.clip(labels, 0, 255)]
    rgb[labels == ignore_index] = 255
    return rgb


def colorize_scalar(
    values: np.ndarray,
    valid: np.ndarray | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    colormap: int = cv2.COLORMAP_TURBO,
) -> np.ndarray:
    """A scalar map ``[H, W]`` -> RGB through ``colormap``; invalid pixels are black.

    The range defaults to the valid values' 2nd to 98th percentile so outliers do not wash
    out the picture.
    """
    values = np.asarray(values, dtype=np.float32)
    valid = np.isfinite(values) if valid is None else (valid & np.isfinite(values))
    if valid.any():
        lo = np.percentile(values[valid], 2) if vmin is None else vmin
        hi = np.percentile(values[valid], 98) if vmax is None else vmax
    else:
        lo, hi = 0.0, 1.0
    scaled = np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1)
    gray = np.nan_to_num(scaled * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(gray, colormap)[..., ::-1].copy()
    rgb[~valid] = 0
    return rgb


def colorize_probability(prob: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Probabilities in [0, 1] ``[H, W]`` -> gray RGB (1 is white); ignored pixels are red."""
    gray = (np.clip(np.asarray(prob, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    if ignore is not None:
        rgb[ignore] = (255, 0, 0)
    return rgb
