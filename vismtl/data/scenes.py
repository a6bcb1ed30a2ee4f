"""Generated 3-D scenes: the embedded default dataset (no download).

Every sample is rendered on the fly by :func:`vismtl.data.scene_renderer.render_scene`,
deterministically per (seed, index), with mutually consistent RGB, semantic labels,
human-like "figure" parts, depth, surface normals, boundaries and saliency. Use a
different ``seed`` for the validation split than for training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vismtl.data.base import MultiTaskDataset
from vismtl.data.scene_renderer import PART_CLASSES, SEMSEG_CLASSES, render_scene
from vismtl.tasks import Task


class ScenesDataset(MultiTaskDataset):
    """``length`` generated scenes of ``size`` = (height, width).

    Fields: ``semseg`` (7 classes: wall, floor, sphere, box, cylinder, cone, figure),
    ``parts`` (4: background, head, torso, legs; all 255 without a figure), ``depth``
    (metres), ``normals`` (camera frame: x right, y up, z to the viewer), ``edge``,
    ``saliency``.
    """

    classes = SEMSEG_CLASSES
    part_classes = PART_CLASSES

    def __init__(
        self,
        tasks: Mapping[str, Task],
        length: int = 2000,
        size: Sequence[int] = (128, 128),
        seed: int = 0,
        transforms: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(tasks, transforms, seed)
        self.length = length
        self.size = (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < self.length:
            raise IndexError(f"scene {index} out of range 0..{self.length - 1}")
        return render_scene(self.seed, index, *self.size)
