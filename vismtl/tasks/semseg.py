"""Semantic segmentation and human-parts segmentation: per-pixel classes, pooled mIoU."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vismtl.tasks.base import IGNORE_INDEX, Metric, Task, channel_argmax, masked_mean_per_sample, to_numpy
from vismtl.tasks.visual import colorize_labels


class ConfusionMatrixMetric(Metric):
    """Dataset-pooled confusion matrix; IoU_c = TP / (TP + FP + FN) summed over all images.

    mIoU averages over the classes that occur in the ground truth or the predictions
    (classes with an empty union are left out, as mmsegmentation's ``IoUMetric`` does).
    Values are in percent, as in the published tables.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confusion", (num_classes, num_classes))  # [gt, pred]

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: integer ``[B, H, W]``; target pixels equal to ``ignore_index`` are skipped."""
        valid = target != self.ignore_index
        index = target[valid].long() * self.num_classes + pred[valid].long()
        counts = torch.bincount(index, minlength=self.num_classes**2)
        self.accumulate("confusion", counts.view(self.num_classes, self.num_classes))

    def compute(self) -> dict[str, float]:
        confusion = self.state["confusion"]
        tp = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - tp
        present = union > 0
        iou = tp[present] / union[present]
        total = confusion.sum()
        return {
            "mIoU": 100.0 * iou.mean().item() if present.any() else float("nan"),
            "aAcc": 100.0 * (tp.sum() / total).item() if total > 0 else float("nan"),
        }

    def per_class_iou(self) -> np.ndarray:
        """IoU of every class in percent (NaN where the class never occurs)."""
        confusion = self.state["confusion"]
        tp = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - tp
        return (100.0 * tp / union).numpy()


class SemsegTask(Task):
    """Semantic segmentation: cross-entropy over ``num_classes``, ``ignore_index`` skipped."""

    kind = "semseg"
    map_kind = "label"
    headline = ("mIoU", True)

    def __init__(
        self,
        name: str = "semseg",
        num_classes: int = 21,
        loss_weight: float = 1.0,
        class_names: tuple[str, ...] | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(name, num_classes, loss_weight, source)
        self.num_classes = num_classes
        self.class_names = tuple(class_names) if class_names else None

    def prepare_target(self, raw: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(raw, dtype=np.int64))

    def empty_target(self, height: int, width: int) -> torch.Tensor:
        return torch.full((height, width), IGNORE_INDEX, dtype=torch.int64)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_pixel = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none")
        return masked_mean_per_sample(per_pixel, target != IGNORE_INDEX)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)

    def decide(self, activated: torch.Tensor) -> torch.Tensor:
        return channel_argmax(activated)

    def export(self, prediction: torch.Tensor) -> np.ndarray:
        """Class ids as an 8-bit label PNG."""
        return to_numpy(prediction).astype(np.uint8)

    def new_metric(self) -> Metric:
        return ConfusionMatrixMetric(self.num_classes)

    def visualize(self, value, reference=None) -> np.ndarray:
        return colorize_labels(to_numpy(value))


class PartsTask(SemsegTask):
    """Human parts: like semseg, but images without a person are all-ignore (255).

    Such images then add nothing to the pooled confusion matrix, so the mIoU is over
    images with persons only, as the PASCAL-Context multi-task protocol requires.
    """

    kind = "parts"

    def __init__(
        self,
        name: str = "parts",
        num_classes: int = 7,
        loss_weight: float = 2.0,
        class_names: tuple[str, ...] | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(name, num_classes, loss_weight, class_names, source)
