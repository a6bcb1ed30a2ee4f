"""Saliency: a per-pixel foreground probability, judged by the dataset-pooled max F-measure."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vismtl.tasks.base import IGNORE_INDEX, BinaryMapTask, Metric, masked_mean_per_sample, to_numpy
from vismtl.tasks.visual import colorize_probability

BETA_SQUARED = 0.3


def f_measure(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, beta_sq: float) -> torch.Tensor:
    precision = tp / (tp + fp).clamp(min=1)
    recall = tp / (tp + fn).clamp(min=1)
    denom = beta_sq * precision + recall
    return torch.where(denom > 0, (1 + beta_sq) * precision * recall / denom.clamp(min=1e-12), 0.0)


class SaliencyMetric(Metric):
    """Max F-measure (beta^2 = 0.3) with TP/FP/FN pooled over the dataset.

    A pixel is predicted salient at threshold t when its probability exceeds t, for
    t = 0.05, 0.10, ..., 0.95; maxF is the best F over thresholds, in percent.

    ``maxF_double_sigmoid`` reproduces a widely copied implementation that applies a
    sigmoid to values that are already probabilities (so the thresholds act on
    sigmoid(p) in [0.5, 0.73]); the published PASCAL-Context tables were made with it.
    ``max_IoU`` is the best foreground IoU over the same thresholds, also pooled.
    """

    def __init__(self, thresholds: np.ndarray | None = None) -> None:
        super().__init__()
        self.thresholds = torch.as_tensor(
            np.round(np.arange(0.05, 0.951, 0.05), 2) if thresholds is None else thresholds,
            dtype=torch.float32,
        )
        for prefix in ("", "ds_"):
            for name in ("tp", "fp", "fn"):
                self.add_state(prefix + name, (len(self.thresholds),))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred: probabilities ``[B, H, W]``; target: ``[B, H, W]`` in {0, 1, 255}."""
        valid = target != IGNORE_INDEX
        prob = pred[valid].float()
        positive = target[valid] == 1
        thresholds = self.thresholds.to(prob.device)
        for prefix, score in (("", prob), ("ds_", torch.sigmoid(prob))):
            predicted = score[None, :] > thresholds[:, None]  # [T, N]
            tp = (predicted & positive).sum(dim=1)
            self.accumulate(prefix + "tp", tp)
            self.accumulate(prefix + "fp", predicted.sum(dim=1) - tp)
            self.accumulate(prefix + "fn", positive.sum() - tp)

    def compute(self) -> dict[str, float]:
        s = self.state
        fmax = f_measure(s["tp"], s["fp"], s["fn"], BETA_SQUARED).max()
        fmax_ds = f_measure(s["ds_tp"], s["ds_fp"], s["ds_fn"], BETA_SQUARED).max()
        iou = s["tp"] / (s["tp"] + s["fp"] + s["fn"]).clamp(min=1)
        return {
            "maxF": 100.0 * fmax.item(),
            "maxF_double_sigmoid": 100.0 * fmax_ds.item(),
            "max_IoU": 100.0 * iou.max().item(),
        }


class SaliencyTask(BinaryMapTask):
    """Binary saliency with class-balanced BCE.

    The balancing weights come from each image (positives weighted by the image's
    fraction of negatives and vice versa) rather than from the whole batch, so that a
    sample's loss does not depend on which other samples share its batch or rank.
    """

    kind = "saliency"
    headline = ("maxF", True)

    def __init__(self, name: str = "saliency", loss_weight: float = 5.0, source: str | None = None) -> None:
        super().__init__(name, 1, loss_weight, source)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits[:, 0].float()
        valid = target != IGNORE_INDEX
        label = (target == 1).float()
        count = valid.flatten(1).sum(1).clamp(min=1)
        neg_fraction = 1.0 - (label * valid).flatten(1).sum(1) / count  # [B]
        weight = torch.where(label > 0, neg_fraction[:, None, None], 1.0 - neg_fraction[:, None, None])
        per_pixel = weight * F.binary_cross_entropy_with_logits(logits, label, reduction="none")
        return masked_mean_per_sample(per_pixel, valid)

    def new_metric(self) -> Metric:
        return SaliencyMetric()

    def visualize(self, value, reference=None) -> np.ndarray:
        value = to_numpy(value)
        if value.dtype == np.uint8:  # a target: {0, 1, 255}
            return colorize_probability(value == 1, ignore=value == IGNORE_INDEX)
        return colorize_probability(value)
