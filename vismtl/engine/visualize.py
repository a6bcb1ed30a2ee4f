"""Prediction panels for ``--show-dir``: the input, then each task's prediction over its ground truth."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from vismtl.tasks import Task
from vismtl.tasks.visual import PALETTE

TITLE_HEIGHT = 18


def _titled(tile: np.ndarray, title: str) -> np.ndarray:
    bar = np.full((TITLE_HEIGHT, tile.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(bar, title, (3, TITLE_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, tile], axis=0)


def _fit(tile: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Tiles of image-level tasks (a class swatch) are stretched to the image's size."""
    if tile.shape[:2] == size:
        return tile
    return cv2.resize(tile, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def make_panel(
    image: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray | None],
    tasks: Mapping[str, Task],
) -> np.ndarray:
    """An RGB panel: input (top left), then per task a column with prediction above target.

    Args:
        image: RGB uint8 ``[H, W, 3]``.
        predictions: ``{task: postprocessed prediction of one sample}``.
        targets: ``{task: target of one sample}`` (None where unlabelled: left blank).
    """
    height, width = image.shape[:2]
    blank = np.full((height, width, 3), 255, dtype=np.uint8)
    top = [_titled(image, "input")]
    bottom = [_titled(blank, "")]
    for name, task in tasks.items():
        target = targets.get(name)
        prediction = _fit(task.visualize(predictions[name], reference=target), (height, width))
        truth = _fit(task.visualize(target), (height, width)) if target is not None else blank
        top.append(_titled(prediction, f"{name} pred"))
        bottom.append(_titled(truth, f"{name} gt"))
    return np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)], axis=0)


def make_gate_panel(gates: Mapping[str, np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Which candidate wins where: one row per layer, one column per task.

    Args:
        gates: ``{task: [L, N+1, h, w]}`` gate weights (N experts, then the memory).
        size: (height, width) of each tile (the input image's size).

    Colour k is expert k of the label palette; the memory (the last candidate) is white.
    """
    tiles = []
    names = list(gates)
    layers, candidates = next(iter(gates.values())).shape[:2]
    colours = PALETTE[1 : candidates + 1].copy()
    colours[-1] = 255
    for layer in range(layers):
        row = []
        for name in names:
            winner = gates[name][layer].argmax(axis=0)
            tile = cv2.resize(colours[winner], (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
            row.append(_titled(tile, f"{name} layer {layer + 1}"))
        tiles.append(np.concatenate(row, axis=1))
    return np.concatenate(tiles, axis=0)
