"""Edge (boundary) detection: weighted BCE, odsF with distance-tolerance matching."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vismtl.tasks import edge_eval
from vismtl.tasks.base import IGNORE_INDEX, BinaryMapTask, Metric, masked_mean_per_sample, to_numpy
from vismtl.tasks.visual import colorize_probability


class EdgeMetric(Metric):
    """Boundary F-measure: ODS (dataset-pooled counts) and OIS, in percent.

    OIS follows BSDS: each image's counts at that image's best threshold, pooled.

    Predictions are thinned by NMS, then matched to the ground truth within
    ``max_dist`` x image diagonal (0.0075 for PASCAL, 0.011 for NYUD). See
    :mod:`vismtl.tasks.edge_eval` for how this Python version differs from SEISM.
    """

    def __init__(self, max_dist: float = 0.0075, num_thresholds: int = 99, nms: bool = True) -> None:
        super().__init__()
        self.max_dist = max_dist
        self.num_thresholds = num_thresholds
        self.nms = nms
        self.add_state("counts", (num_thresholds, 4))
        self.add_state("ois_counts", (4,))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred: probabilities ``[B, H, W]``; target: ``[B, H, W]`` in {0, 1, 255}."""
        for prob, gt in zip(to_numpy(pred), to_numpy(target)):
            if self.nms:
                prob = edge_eval.edge_nms(prob)
            counts = edge_eval.edge_match_counts(
                prob, gt == 1, self.max_dist, self.num_thresholds, ignore=gt == IGNORE_INDEX
            )
            self.accumulate("counts", torch.from_numpy(counts))
            best = int(np.argmax(edge_eval.precision_recall_f(counts)[2]))
            self.accumulate("ois_counts", torch.from_numpy(counts[best]))

    def compute(self) -> dict[str, float]:
        ods = edge_eval.ods_from_pooled(self.state["counts"].numpy())
        return {
            "odsF": 100.0 * ods["odsF"],
            "oisF": 100.0 * float(edge_eval.precision_recall_f(self.state["ois_counts"].numpy())[2]),
            "ods_threshold": ods["ods_threshold"],
        }


class EdgeTask(BinaryMapTask):
    """Binary boundaries with a weighted BCE: positives x ``pos_weight``, negatives x (1 - pos_weight).

    Args:
        pos_weight: 0.95 in the PASCAL-Context / NYUD-v2 recipes (positives count 19x).
        max_dist: matching tolerance as a fraction of the image diagonal.
    """

    kind = "edge"
    headline = ("odsF", True)

    def __init__(
        self,
        name: str = "edge",
        loss_weight: float = 50.0,
        pos_weight: float = 0.95,
        max_dist: float = 0.0075,
        num_thresholds: int = 99,
        source: str | None = None,
    ) -> None:
        super().__init__(name, 1, loss_weight, source)
        self.pos_weight = pos_weight
        self.max_dist = max_dist
        self.num_thresholds = num_thresholds

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        label = (target == 1).float()
        weight = torch.where(target == 1, self.pos_weight, 1.0 - self.pos_weight)
        per_pixel = weight * F.binary_cross_entropy_with_logits(logits[:, 0].float(), label, reduction="none")
        return masked_mean_per_sample(per_pixel, target != IGNORE_INDEX)

    def new_metric(self) -> Metric:
        return EdgeMetric(self.max_dist, self.num_thresholds)

    def visualize(self, value, reference=None) -> np.ndarray:
        value = to_numpy(value)
        if value.dtype == np.uint8:
            return 255 - colorize_probability(value == 1, ignore=None)
        return 255 - colorize_probability(value)
