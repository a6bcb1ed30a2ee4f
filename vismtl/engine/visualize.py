"""Prediction panels for ``--show-dir``: the input, then each task's prediction over its ground truth."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from vismtl.tasks import Task

TITLE_HEIGHT = 18


def _titled(tile: np.ndarray, title: str) -> np.ndarray:
    bar = np.full((TITLE_HEIGHT, tile.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(bar, title, (3, TITLE_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, tile], axis=0)


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
        top.append(_titled(task.visualize(predictions[name], reference=target), f"{name} pred"))
        bottom.append(_titled(task.visualize(target) if target is not None else blank, f"{name} gt"))
    return np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)], axis=0)
