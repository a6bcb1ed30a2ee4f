"""Surface normals: unit vectors per pixel, L1 loss, angular-error metrics in degrees."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vismtl.tasks.base import Metric, Task, masked_mean_per_sample, to_numpy

HIST_BIN_DEG = 0.01  # the median is read off a histogram this fine (error <= 0.005 deg)


def angular_error_deg(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Angle between unit vectors along dim 1, in degrees: 2 atan2(|p - g|, |p + g|).

    This form stays accurate near 0 and 180 degrees, where acos of the dot product loses
    precision.
    """
    diff = (pred - target).norm(dim=1)
    summ = (pred + target).norm(dim=1)
    return torch.rad2deg(2.0 * torch.atan2(diff, summ))


class NormalsMetric(Metric):
    """Angular error over valid pixels, pooled over the dataset.

    Reports ``mean`` (the headline, lower is better), ``median``, ``rmse`` and the share of
    pixels under 11.25, 22.5 and 30 degrees (in percent).
    """

    thresholds = (11.25, 22.5, 30.0)

    def __init__(self) -> None:
        super().__init__()
        self.add_state("histogram", (round(180 / HIST_BIN_DEG),))
        for name in ("sum", "sum_sq", "pixels", *[f"under_{t}" for t in self.thresholds]):
            self.add_state(name)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: ``[B, 3, H, W]``; target pixels with zero length are invalid."""
        valid = target.norm(dim=1) > 0.5
        angles = angular_error_deg(pred.float(), target.float())[valid]
        bins = (angles / HIST_BIN_DEG).long().clamp(max=self.state["histogram"].numel() - 1)
        self.accumulate("histogram", torch.bincount(bins, minlength=self.state["histogram"].numel()))
        self.accumulate("sum", angles.double().sum())
        self.accumulate("sum_sq", (angles.double() ** 2).sum())
        self.accumulate("pixels", angles.numel())
        for t in self.thresholds:
            self.accumulate(f"under_{t}", (angles < t).sum())

    def compute(self) -> dict[str, float]:
        s = self.state
        pixels = s["pixels"].clamp(min=1)
        cumulative = s["histogram"].cumsum(0)
        median_bin = int(torch.searchsorted(cumulative, s["pixels"] / 2).item())
        out = {
            "mean": (s["sum"] / pixels).item(),
            "median": (median_bin + 0.5) * HIST_BIN_DEG,
            "rmse": (s["sum_sq"] / pixels).sqrt().item(),
        }
        for t in self.thresholds:
            out[f"<{t}"] = 100.0 * (s[f"under_{t}"] / pixels).item()
        return out


class NormalsTask(Task):
    """Surface normals in the camera frame (x right, y up, z towards the viewer).

    The loss is L1 between the L2-normalised prediction and the target, averaged over the
    three components of the valid pixels (targets of zero length are invalid).
    """

    kind = "normals"
    map_kind = "normals"
    headline = ("mean", False)

    def __init__(self, name: str = "normals", loss_weight: float = 10.0, source: str | None = None) -> None:
        super().__init__(name, 3, loss_weight, source)

    def prepare_target(self, raw: np.ndarray) -> torch.Tensor:
        """raw: ``[H, W, 3]`` float unit vectors (zero vectors where invalid)."""
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(raw, -1, 0), dtype=np.float32))

    def empty_target(self, height: int, width: int) -> torch.Tensor:
        return torch.zeros((3, height, width), dtype=torch.float32)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = F.normalize(logits.float(), dim=1)
        per_pixel = (pred - target).abs().sum(dim=1) / 3.0
        return masked_mean_per_sample(per_pixel, target.norm(dim=1) > 0.5)

    def decide(self, activated: torch.Tensor) -> torch.Tensor:
        return F.normalize(activated, dim=1)

    def export(self, prediction: torch.Tensor) -> np.ndarray:
        """RGB ``[H, W, 3]`` uint8 with each channel (n + 1) / 2 x 255 (x, y, z = R, G, B)."""
        return np.round((np.moveaxis(to_numpy(prediction), 0, -1) + 1) * 127.5).clip(0, 255).astype(np.uint8)

    def new_metric(self) -> Metric:
        return NormalsMetric()

    def visualize(self, value, reference=None) -> np.ndarray:
        """``[3, H, W]`` -> RGB with each channel = (component + 1) / 2; invalid pixels black."""
        normals = to_numpy(value).astype(np.float32)
        valid = np.linalg.norm(normals, axis=0) > 0.5
        rgb = ((np.moveaxis(normals, 0, -1) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
        rgb[~valid] = 0
        return rgb
