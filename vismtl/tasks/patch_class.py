"""Patch (tissue-type) classification: one class per image, from the centre of the tile."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vismtl.tasks import instance_metrics as im
from vismtl.tasks.base import IGNORE_INDEX, Metric, Task, to_numpy
from vismtl.tasks.visual import PALETTE


class ClassificationMetric(Metric):
    """Accuracy, balanced accuracy and macro F1 from a pooled confusion matrix, in percent."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("confusion", (num_classes, num_classes))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        cm = im.confusion_matrix(to_numpy(pred).ravel(), to_numpy(target).ravel(), self.num_classes)
        self.accumulate("confusion", torch.from_numpy(cm.astype(np.float64)))

    def compute(self) -> dict[str, float]:
        values = im.classification_from_confusion(self.state["confusion"].numpy())
        return {k: 100.0 * v for k, v in values.items()}


class PatchClassTask(Task):
    """Image-level classes (e.g. Cerberus' 9 tissue types) with cross-entropy.

    Args:
        num_classes: number of classes.
        class_names: their names (shown in panels).
        label_smoothing: cross-entropy label smoothing.
    """

    kind = "patch_class"
    map_kind = "none"
    headline = ("balanced_accuracy", True)
    dense = False

    def __init__(
        self,
        name: str = "tissue",
        num_classes: int = 9,
        class_names: Sequence[str] | None = None,
        label_smoothing: float = 0.0,
        loss_weight: float = 0.4,
        source: str | None = None,
    ) -> None:
        super().__init__(name, num_classes, loss_weight, source or "tissue_class")
        self.class_names = tuple(class_names) if class_names else tuple(str(i) for i in range(num_classes))
        self.label_smoothing = label_smoothing

    def prepare_target(self, raw) -> torch.Tensor:
        label = int(raw)
        if not 0 <= label < self.num_outputs:
            raise ValueError(f"patch class {label} outside 0..{self.num_outputs - 1}")
        return torch.tensor(label, dtype=torch.int64)

    def empty_target(self, height: int, width: int) -> torch.Tensor:
        return torch.tensor(IGNORE_INDEX, dtype=torch.int64)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        has_label = target != IGNORE_INDEX
        labels = torch.where(has_label, target, torch.zeros_like(target))
        per_sample = F.cross_entropy(logits.float(), labels, reduction="none", label_smoothing=self.label_smoothing)
        return torch.where(has_label, per_sample, torch.zeros_like(per_sample)), has_label

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)

    def decide(self, activated: torch.Tensor) -> torch.Tensor:
        return activated.argmax(dim=1)

    def new_metric(self) -> Metric:
        return ClassificationMetric(self.num_outputs)

    def visualize(self, value, reference=None) -> np.ndarray:
        """A tile in the class's colour with its name."""
        label = int(to_numpy(value))
        tile = np.full((64, 64, 3), 255, np.uint8)
        if 0 <= label < self.num_outputs:
            tile[:] = PALETTE[label + 1]
            text = self.class_names[label][:10]
            cv2.putText(tile, text, (2, 36), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 255), 1, cv2.LINE_AA)
        return tile
