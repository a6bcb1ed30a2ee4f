"""Monocular depth in metres: L1 over valid pixels, dataset-pooled RMSE."""

from __future__ import annotations

import numpy as np
import torch

from vismtl.tasks.base import Metric, Task, masked_mean_per_sample, to_numpy
from vismtl.tasks.visual import colorize_scalar

MIN_DEPTH = 1e-3  # predictions are clamped here before ratios and logs


class DepthMetric(Metric):
    """Depth errors over valid pixels (ground truth > 0).

    ``rmse`` is pooled: sqrt(sum of squared errors over all valid pixels of the dataset /
    their number) -- the definition of the NYUD-v2 multi-task tables. ``rmse_per_image``
    averages each image's RMSE instead (the KITTI-style convention), for comparison.
    ``abs_rel`` and ``delta1`` (share of pixels with max(p/g, g/p) < 1.25) are pooled.
    """

    def __init__(self) -> None:
        super().__init__()
        for name in ("sq_err", "abs_rel", "delta1", "pixels", "image_rmse", "images"):
            self.add_state(name)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: metres ``[B, H, W]`` (target 0 = invalid)."""
        # float64 sums: the state must not depend on how images are batched or split over ranks.
        pred = pred.double().clamp(min=MIN_DEPTH)
        target = target.double()
        valid = target > 0
        sq = torch.where(valid, (pred - target) ** 2, 0.0).flatten(1)
        pixels = valid.flatten(1).sum(1)
        ratio = torch.maximum(pred / target.clamp(min=MIN_DEPTH), target / pred)
        self.accumulate("sq_err", sq.sum())
        self.accumulate("abs_rel", torch.where(valid, (pred - target).abs() / target.clamp(min=MIN_DEPTH), 0.0).sum())
        self.accumulate("delta1", (valid & (ratio < 1.25)).sum())
        self.accumulate("pixels", pixels.sum())
        has = pixels > 0
        self.accumulate("image_rmse", (sq.sum(1)[has] / pixels[has]).sqrt().sum())
        self.accumulate("images", has.sum())

    def compute(self) -> dict[str, float]:
        s = self.state
        pixels = s["pixels"].clamp(min=1)
        return {
            "rmse": (s["sq_err"] / pixels).sqrt().item(),
            "rmse_per_image": (s["image_rmse"] / s["images"].clamp(min=1)).item(),
            "abs_rel": (s["abs_rel"] / pixels).item(),
            "delta1": 100.0 * (s["delta1"] / pixels).item(),
        }


class DepthTask(Task):
    """Depth regression in metres with an L1 loss over pixels where the ground truth > 0."""

    kind = "depth"
    map_kind = "depth"
    headline = ("rmse", False)

    def __init__(self, name: str = "depth", loss_weight: float = 1.0, source: str | None = None) -> None:
        super().__init__(name, 1, loss_weight, source)

    def prepare_target(self, raw: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))

    def empty_target(self, height: int, width: int) -> torch.Tensor:
        return torch.zeros((height, width), dtype=torch.float32)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return masked_mean_per_sample((logits[:, 0].float() - target).abs(), target > 0)

    def decide(self, activated: torch.Tensor) -> torch.Tensor:
        return activated[:, 0].clamp(min=MIN_DEPTH)

    def export(self, prediction: torch.Tensor) -> np.ndarray:
        """Depth in millimetres as a 16-bit PNG."""
        return np.round(to_numpy(prediction) * 1000).clip(0, 65535).astype(np.uint16)

    def new_metric(self) -> Metric:
        return DepthMetric()

    def visualize(self, value, reference=None) -> np.ndarray:
        depth = to_numpy(value)
        scale = to_numpy(reference) if reference is not None else depth
        valid = scale > 0
        vmin, vmax = np.percentile(scale[valid], [2, 98]) if valid.any() else (None, None)
        return colorize_scalar(depth, valid=depth > 0, vmin=vmin, vmax=vmax)
