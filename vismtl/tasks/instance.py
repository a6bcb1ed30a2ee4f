"""Instance segmentation of nuclei, glands or lumina as a 3-class map (Cerberus).

The network predicts, per pixel, background / eroded interior / contour band (band width
``band``: 3 for nuclei and lumina, 11 for glands). The loss is cross-entropy weighted by the
U-Net boundary map plus a soft Dice over the two object classes. Post-processing turns the
probabilities back into instances: marker-controlled watershed for nuclei,
interior-minus-contour labelling for glands and lumina; with ``inside`` set, instances
mostly outside the named task's objects are dropped (lumina outside glands).

The target of a sample is ``[3, H, W]`` float32: the class map (255 where ignored), the
boundary weight map and the instance ids (for the metrics).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from vismtl.tasks import instance_metrics as im
from vismtl.tasks import instance_targets as it
from vismtl.tasks.base import IGNORE_INDEX, Metric, Task, masked_mean_per_sample, to_numpy
from vismtl.tasks.flood_on_device import flood_on_device
from vismtl.tasks.visual import PALETTE

POSTPROCESSING = ("watershed", "interior_minus_contour")


def soft_dice_loss(probabilities: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, classes) -> torch.Tensor:
    """Per-sample ``1 - mean_c Dice_c`` over ``classes`` on valid pixels. probabilities ``[B, C, H, W]``."""
    losses = []
    for c in classes:
        p = probabilities[:, c] * valid
        g = ((target == c) & valid).float()
        inter = (p * g).flatten(1).sum(1)
        total = (p + g).flatten(1).sum(1)
        losses.append(1.0 - (2 * inter + 1.0) / (total + 1.0))
    return torch.stack(losses).mean(0)


class InstanceMetric(Metric):
    """Dice, AJI, AJI+, PQ (DQ, SQ) and centroid detection F1, pooled over images (also per image)."""

    def __init__(self, match_distance: float) -> None:
        super().__init__()
        self.match_distance = match_distance
        for name, fields in (
            ("dice", im.DICE_FIELDS),
            ("aji", im.AJI_FIELDS),
            ("aji_plus", im.AJI_FIELDS),
            ("pq", im.PQ_FIELDS),
            ("detection", im.DETECTION_FIELDS),
        ):
            self.add_state(name, (len(fields),))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred: instance ids ``[B, H, W]``; target: ``[B, 3, H, W]`` (class, weight, ids)."""
        for instances, truth in zip(to_numpy(pred), to_numpy(target)):
            gt = truth[2].astype(np.int64)
            ignored = truth[0] == IGNORE_INDEX
            if ignored.any():  # padding: neither predictions nor objects count there
                instances = np.where(ignored, 0, instances)
            stats = im.instance_metric_stats(gt, instances.astype(np.int64), max_dist=self.match_distance)
            for name, values in stats.items():
                self.accumulate(name, torch.from_numpy(values))

    def compute(self) -> dict[str, float]:
        values = im.instance_metrics_from_stats({k: v.numpy() for k, v in self.state.items()})
        return {k: 100.0 * v for k, v in values.items()}  # all are fractions: shown in percent


class InstanceTask(Task):
    """Nuclei, gland or lumen instances from a background / interior / contour map.

    Args:
        band: contour band width in pixels (3 nuclei and lumina, 11 glands).
        postprocess: ``"watershed"`` (nuclei) or ``"interior_minus_contour"`` (glands, lumina).
        threshold: probability threshold of the post-processing (0.5; 0.55 for glands).
        min_size: objects smaller than this many pixels are removed.
        inside: name of the task whose objects must contain this task's (e.g. lumina in glands).
        boundary_w0, boundary_sigma: the U-Net weight map, w = 1 + w0 exp(-((d1 + d2) / sigma)^2 / 2).
        dice_weight: weight of the soft Dice term.
        match_distance: centroid distance (pixels) for detection F1.
    """

    kind = "instance"
    map_kind = "instance"
    headline = ("pq", True)

    def __init__(
        self,
        name: str = "nuclei",
        band: int = 3,
        postprocess: str = "watershed",
        threshold: float = 0.5,
        min_size: int = 10,
        inside: str | None = None,
        boundary_w0: float = 10.0,
        boundary_sigma: float = 5.0,
        dice_weight: float = 1.0,
        match_distance: float = 6.0,
        loss_weight: float = 1.0,
        source: str | None = None,
    ) -> None:
        super().__init__(name, 3, loss_weight, source or f"{name}_inst")
        if postprocess not in POSTPROCESSING:
            raise ValueError(f"postprocess must be one of {POSTPROCESSING}, not '{postprocess}'")
        self.band, self.postprocess_kind, self.threshold, self.min_size = band, postprocess, threshold, min_size
        self.inside, self.w0, self.sigma = inside, boundary_w0, boundary_sigma
        self.dice_weight, self.match_distance = dice_weight, match_distance

    def prepare_target(self, raw: np.ndarray) -> torch.Tensor:
        """Instance ids ``[H, W]`` (negative = padding) -> ``[3, H, W]`` (class, weight, ids)."""
        ids = np.where(raw > 0, raw, 0).astype(np.int32)
        classes = it.instance_to_classes(ids, self.band).astype(np.float32)
        classes[raw < 0] = IGNORE_INDEX
        weights = it.boundary_weight_map(ids, self.w0, self.sigma)
        return torch.from_numpy(np.stack([classes, weights, ids.astype(np.float32)]))

    def empty_target(self, height: int, width: int) -> torch.Tensor:
        target = torch.zeros((3, height, width), dtype=torch.float32)
        target[0] = IGNORE_INDEX
        return target

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        classes = target[:, 0].long()
        valid = classes != IGNORE_INDEX
        cross_entropy = F.cross_entropy(logits.float(), classes, ignore_index=IGNORE_INDEX, reduction="none")
        per_sample, has_label = masked_mean_per_sample(cross_entropy * target[:, 1], valid)
        if self.dice_weight:
            probabilities = torch.softmax(logits.float(), dim=1)
            per_sample = per_sample + self.dice_weight * soft_dice_loss(probabilities, classes, valid, (1, 2))
        return per_sample, has_label

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)

    def decide(self, activated: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[B, 3, H, W]`` -> instance ids ``[B, H, W]`` int32 (on the CPU)."""
        return self.decide_from_cues(self.pixel_cues(activated))

    def pixel_cues(self, activated: torch.Tensor, decide: bool = False) -> dict[str, torch.Tensor]:
        """The per-pixel part of :meth:`decide`, where ``activated`` is (the model's device):
        ``{name: [B, H, W]}``, a few bytes a pixel instead of the probabilities' twelve. With
        ``decide``, the nuclei (watershed, band 3) are decided there whole, the CPU's ids exactly
        (:mod:`vismtl.tasks.flood_on_device`): ``{"labels": int32 [B, H, W]}``."""
        if self.postprocess_kind != "watershed":
            return it.seed_cues(activated, self.threshold)
        cues = it.watershed_cues(activated, self.threshold)
        if decide and it.band_radii(self.band)[0] == 1:
            decided = [
                flood_on_device(*(cues[n][k] for n in ("mask", "marked", "rise")), self.min_size)
                for k in range(len(activated))
            ]
            if all(labels is not None for labels in decided):
                return {"labels": torch.stack(decided) if decided else cues["marked"].to(torch.int32)}
        return cues

    def decide_from_cues(self, cues: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The rest of :meth:`decide` (components, flooding, growth), on the CPU: ids ``[B, H, W]`` int32."""
        if "labels" in cues:  # decided where the probabilities were (pixel_cues on a GPU)
            return cues["labels"].cpu().to(torch.int32)
        cues = {name: value.cpu().numpy() for name, value in cues.items()}  # float64 rise kept as it is
        first = next(iter(cues.values()))
        count, shape = len(first), first.shape[1:]
        if self.postprocess_kind == "watershed":
            maps = [
                it.watershed_from_cues(cues["mask"][k], cues["marked"][k], cues["rise"][k], self.min_size, self.band)
                for k in range(count)
            ]
        else:
            maps = [it.grow_seeds(cues["seeds"][k], self.band, self.min_size) for k in range(count)]
        return torch.from_numpy(np.stack(maps)) if maps else torch.zeros((0, *shape), dtype=torch.int32)

    @property
    def reach(self) -> int:
        """How far (pixels) the decided objects, and what decides them, reach beyond the pixels
        whose probabilities are not all 0: the growth by the band's inner half, plus one."""
        return it.band_radii(self.band)[0] + 1

    def refine(self, prediction: torch.Tensor, predictions: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Drop instances outside the ``inside`` task's objects (lumina outside glands)."""
        if self.inside is None or self.inside not in predictions:
            return prediction
        containers = to_numpy(predictions[self.inside]) > 0
        kept = [it.drop_outside(p, c) for p, c in zip(to_numpy(prediction), containers)]
        return torch.from_numpy(np.stack(kept)) if kept else prediction

    def new_metric(self) -> Metric:
        return InstanceMetric(self.match_distance)

    def export(self, prediction: torch.Tensor) -> np.ndarray:
        """Instance ids as a 16-bit PNG."""
        return to_numpy(prediction).clip(0, 65535).astype(np.uint16)

    def visualize(self, value, reference=None) -> np.ndarray:
        """Instances in palette colours (target: its id channel); background black."""
        value = to_numpy(value)
        ids = value[2] if value.ndim == 3 else value
        ids = ids.astype(np.int64)
        rgb = PALETTE[(ids * 37) % 255 + 1]
        rgb[ids == 0] = 0
        return rgb
