"""Type maps supervised inside objects: nuclear types (7 classes) and gland types (3), Cerberus-style.

The loss is class-weighted cross-entropy plus a soft Dice, both over the pixels of labelled
objects only (type > 0): the instance task decides where objects are, the type task what
they are. At inference the type of every pixel is the most likely non-background class;
with ``instances_from`` set, each predicted instance of that task takes the majority type
of its pixels (and everything outside instances is background).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vismtl.tasks import instance_targets as it
from vismtl.tasks.base import IGNORE_INDEX, Metric, Task, channel_argmax, masked_mean_per_sample, to_numpy
from vismtl.tasks.instance import soft_dice_loss
from vismtl.tasks.visual import colorize_labels


class TypeMetric(Metric):
    """Pixel accuracy inside labelled objects and Dice per object class (pooled), in percent.

    Counted over the pixels of true objects: a pixel there predicted as background (outside
    every predicted instance, after ``instances_from``) is an error of its true class; pixels
    outside true objects are not counted. ``mean_dice`` averages the classes present;
    ``dice_<class>`` gives each (spaces in class names become underscores).
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        names = class_names or [str(k) for k in range(num_classes)]
        self.class_keys = [f"dice_{name.replace(' ', '_')}" for name in names]
        self.add_state("confusion", (num_classes, num_classes))  # [gt, pred], pixels inside objects

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        inside = (target > 0) & (target != IGNORE_INDEX)
        index = target[inside].long() * self.num_classes + pred[inside].long().clamp(0, self.num_classes - 1)
        self.accumulate("confusion", torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, -1))

    def compute(self) -> dict[str, float]:
        confusion = self.state["confusion"]
        tp = confusion.diag()
        total = confusion.sum()
        denominators = confusion.sum(0) + confusion.sum(1)
        present = denominators[1:] > 0
        per_class = 2 * tp[1:] / denominators[1:].clamp(min=1)
        dice = per_class[present]
        return {
            "accuracy": 100.0 * (tp.sum() / total).item() if total > 0 else float("nan"),
            "mean_dice": 100.0 * dice.mean().item() if present.any() else float("nan"),
            **{
                key: 100.0 * value.item() if seen else float("nan")
                for key, value, seen in zip(self.class_keys[1:], per_class, present.tolist())
            },
        }


class TypeTask(Task):
    """Per-pixel object types, learnt inside objects only.

    Args:
        num_classes: classes including background (7 nuclear types, 3 gland types).
        class_weights: cross-entropy weight per class (e.g. the paper's 12/1/2/6/12/2 for
            the six nuclear types; background's weight is unused since it is not supervised).
        dice_weight: weight of the soft Dice over the object classes.
        instances_from: an instance task whose predictions give the objects to vote over.
    """

    kind = "type"
    map_kind = "label"
    headline = ("mean_dice", True)

    def __init__(
        self,
        name: str = "nuclei_type",
        num_classes: int = 7,
        class_names: Sequence[str] | None = None,
        class_weights: Sequence[float] | None = None,
        dice_weight: float = 1.0,
        instances_from: str | None = None,
        loss_weight: float = 1.0,
        source: str | None = None,
    ) -> None:
        super().__init__(name, num_classes, loss_weight, source)
        self.num_classes, self.class_names = num_classes, tuple(class_names) if class_names else None
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"{len(class_weights)} class weights for {num_classes} classes")
        self.class_weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.dice_weight, self.instances_from = dice_weight, instances_from

    def prepare_target(self, raw: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(raw, dtype=np.int64))

    def empty_target(self, height: int, width: int) -> torch.Tensor:
        return torch.full((height, width), IGNORE_INDEX, dtype=torch.int64)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inside = (target > 0) & (target != IGNORE_INDEX)
        labels = torch.where(inside, target, torch.zeros_like(target))
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        cross_entropy = F.cross_entropy(logits.float(), labels, weight=weight, reduction="none")
        per_sample, has_label = masked_mean_per_sample(cross_entropy, inside)
        if self.dice_weight:
            probabilities = torch.softmax(logits.float(), dim=1)
            dice = soft_dice_loss(probabilities, labels, inside, range(1, self.num_classes))
            per_sample = per_sample + self.dice_weight * torch.where(has_label, dice, torch.zeros_like(dice))
        return per_sample, has_label

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)

    def decide(self, activated: torch.Tensor) -> torch.Tensor:
        """The most likely object class per pixel (background excluded) ``[B, H, W]``."""
        return channel_argmax(activated[:, 1:]) + 1

    def refine(self, prediction: torch.Tensor, predictions: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Majority type per predicted instance of ``instances_from``; background outside instances."""
        if self.instances_from is None or self.instances_from not in predictions:
            return prediction
        voted = [
            it.majority_type_map(instances, types, self.num_classes)
            for types, instances in zip(to_numpy(prediction), to_numpy(predictions[self.instances_from]))
        ]
        if not voted:
            return prediction
        stacked = voted[0][None] if len(voted) == 1 else np.stack(voted)  # a chunk: one map, no copy
        return torch.from_numpy(stacked).to(prediction.dtype)

    def new_metric(self) -> Metric:
        return TypeMetric(self.num_classes, self.class_names)

    def export(self, prediction: torch.Tensor) -> np.ndarray:
        return to_numpy(prediction).astype(np.uint8)

    def visualize(self, value, reference=None) -> np.ndarray:
        return colorize_labels(to_numpy(value))
