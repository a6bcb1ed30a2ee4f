"""The base of every multi-task dataset: raw maps -> augmented tensors + task mask."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vismtl.data.samplers import derive_seed
from vismtl.data.transforms import Pipeline
from vismtl.tasks import Task


class MultiTaskDataset(Dataset):
    """Subclasses implement ``__len__``, ``load(index)`` and optionally ``name(index)``.

    ``load`` returns raw numpy maps: ``image`` (uint8 ``[H, W, 3]`` RGB) and one entry per
    labelled field (a task reads the field named by its ``source``). A field that is
    absent means "not labelled": the sample gets the task's empty target and a False in
    its ``task_mask``. Items are ``{"image": uint8 [3, H, W], task: target, "task_mask":
    bool [T], "meta": {...}}``.

    Args:
        tasks: the tasks to produce targets for.
        transforms: augmentation steps (see :mod:`vismtl.data.transforms`).
        seed: the dataset's seed (content of generated datasets; default augmentation seeds).
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        transforms: Sequence[Mapping[str, Any]] = (),
        seed: int = 0,
    ) -> None:
        self.tasks = dict(tasks)
        self.seed = seed
        map_kinds = {task.source: task.map_kind for task in self.tasks.values() if task.dense}
        self.pipeline = Pipeline(transforms, map_kinds, where=f"{type(self).__name__}.transforms")

    def load(self, index: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def name(self, index: int) -> str:
        return f"{index:06d}"

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, derive_seed(self.seed, key))
        raw = self.load(index)
        # Label maps go through the augmentation with the image; image-level labels do not.
        fields = {"image"} | {task.source for task in self.tasks.values() if task.dense}
        sample = self.pipeline({k: v for k, v in raw.items() if k in fields}, seed)
        sample |= {t.source: raw[t.source] for t in self.tasks.values() if not t.dense and t.source in raw}
        image = sample["image"]
        height, width = image.shape[:2]
        item: dict[str, Any] = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))}
        mask = []
        for name, task in self.tasks.items():
            labelled = task.source in sample
            item[name] = task.prepare_target(sample[task.source]) if labelled else task.empty_target(height, width)
            mask.append(labelled)
        item["task_mask"] = torch.tensor(mask, dtype=torch.bool)
        item["meta"] = {"index": index, "name": self.name(index)}
        return item
