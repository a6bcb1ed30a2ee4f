"""The Task and Metric interfaces every task kind implements.

A task couples what a model must predict with how it is learnt and judged:

- ``prepare_target``: a raw numpy map from a dataset -> the tensor the loss and metric read;
- ``loss``: per-sample losses ``[B]`` and which samples carry a label ``[B]``, so that the
  engine can mask partially labelled batches and normalise by the labelled count;
- ``postprocess``: raw logits -> prediction (class ids, probabilities, unit normals, ...);
- ``new_metric``: a streaming :class:`Metric` whose state merges exactly across ranks;
- ``visualize``: one prediction or target -> an RGB image.

The model and the engine never special-case a task: they call these functions only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist

IGNORE_INDEX = 255


class Metric:
    """A streaming metric: ``update`` per batch, ``merge`` across ranks, ``compute`` at the end.

    State lives in float64 tensors that are sums or counts, so merging ranks is one
    ``all_reduce(SUM)`` per tensor and gives exactly the single-process result.
    """

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    def add_state(self, name: str, shape: tuple[int, ...] = ()) -> None:
        self.state[name] = torch.zeros(shape, dtype=torch.float64)

    def accumulate(self, name: str, value: torch.Tensor | float) -> None:
        """Add ``value`` to the state ``name`` (moved to the CPU in float64)."""
        if isinstance(value, torch.Tensor):
            value = value.detach().to("cpu", torch.float64)
        self.state[name] += value

    def update(self, pred: Any, target: torch.Tensor) -> None:
        raise NotImplementedError

    def merge(self) -> None:
        """Sum the state over all ranks (a no-op outside distributed runs)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        for name, value in self.state.items():
            buffer = value.to(device)
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            self.state[name] = buffer.cpu()

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class Task:
    """One prediction target of a multi-task model.

    Args:
        name: the task's name in configs, batches and outputs (e.g. ``"semseg"``).
        num_outputs: channels of the task's logits.
        loss_weight: weight of this task's loss in the total.
        source: the dataset field holding this task's labels (default: ``name``).
    """

    kind: ClassVar[str] = ""
    # How geometric augmentation treats the target: "label" (nearest, padded with ignore),
    # "depth" (nearest, divided by the zoom), "normals" (nearest, x negated on flips),
    # "instance" (nearest, padded with -1), "none" (image-level: not a map).
    map_kind: ClassVar[str] = "label"
    # The metric Delta_m uses and whether higher is better.
    headline: ClassVar[tuple[str, bool]] = ("", True)
    # Dense tasks predict a map at input resolution; image-level tasks a vector.
    dense: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        num_outputs: int,
        loss_weight: float = 1.0,
        source: str | None = None,
    ) -> None:
        self.name = name
        self.num_outputs = num_outputs
        self.loss_weight = float(loss_weight)
        self.source = source or name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, outputs={self.num_outputs})"

    def settings(self) -> dict[str, Any]:
        """The task's kind and plain settings (numbers, names and tuples of them), as JSON would
        hold them: what its outputs depend on, for a resumed run to compare (thresholds, sizes)."""
        plain = (bool, int, float, str, type(None))
        found: dict[str, Any] = {"kind": type(self).__name__}
        for key, value in vars(self).items():
            if isinstance(value, plain):
                found[key] = value
            elif isinstance(value, tuple) and all(isinstance(v, plain) for v in value):
                found[key] = list(value)
        return found

    def prepare_target(self, raw: np.ndarray) -> torch.Tensor:
        """A raw label map [H, W] from a dataset -> the target tensor of one sample."""
        raise NotImplementedError

    def empty_target(self, height: int, width: int) -> torch.Tensor:
        """The target of a sample that has no label for this task (ignored everywhere)."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample loss ``[B]`` and a bool ``[B]`` saying which samples had any label."""
        raise NotImplementedError

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> continuous outputs that can be averaged across overlapping tiles
        (probabilities, depth, unnormalised normals), keeping the channel dimension."""
        return logits.float()

    def decide(self, activated: torch.Tensor) -> torch.Tensor:
        """Activated outputs -> predictions in the target's units (class ids, probabilities, ...)."""
        raise NotImplementedError

    def postprocess(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C, H, W]`` -> predictions in the target's units: ``decide(activate(logits))``."""
        return self.decide(self.activate(logits))

    def refine(self, prediction: Any, predictions: Mapping[str, Any]) -> Any:
        """Adjust this task's prediction given every task's (e.g. lumina kept inside glands)."""
        return prediction

    def new_metric(self) -> Metric:
        raise NotImplementedError

    def export(self, prediction: torch.Tensor) -> np.ndarray | None:
        """One sample's prediction -> the image ``tools/test.py --export-dir`` saves (uint8 or
        uint16, gray or RGB), or None: a task without one (image-level classes go to a table)."""
        return None

    def visualize(
        self, value: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor | None = None
    ) -> np.ndarray:
        """One sample's prediction or target -> RGB uint8 ``[H, W, 3]``.

        ``reference`` (the target, when drawing a prediction) lets scalar maps share the
        target's colour scale, so prediction and ground truth can be compared by eye.
        """
        raise NotImplementedError


class BinaryMapTask(Task):
    """A per-pixel probability (saliency, edges): targets {0, 1, 255}, sigmoid outputs, uint8 exports."""

    map_kind = "label"

    def prepare_target(self, raw: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(raw, dtype=np.uint8))

    def empty_target(self, height: int, width: int) -> torch.Tensor:
        return torch.full((height, width), IGNORE_INDEX, dtype=torch.uint8)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def decide(self, activated: torch.Tensor) -> torch.Tensor:
        return activated[:, 0]

    def export(self, prediction: torch.Tensor) -> np.ndarray:
        """Probability x 255 as an 8-bit image."""
        return np.round(to_numpy(prediction).clip(0, 1) * 255).astype(np.uint8)


def masked_mean_per_sample(values: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``values`` over the ``valid`` pixels of each sample.

    Args:
        values: ``[B, ...]`` per-pixel losses (any value where invalid).
        valid: bool ``[B, ...]`` of the same shape.

    Returns:
        ``([B] loss, [B] bool has_label)``; samples without valid pixels get loss 0.
    """
    valid = valid.flatten(1)
    count = valid.sum(dim=1)
    total = torch.where(valid, values.flatten(1), torch.zeros((), dtype=values.dtype, device=values.device))
    return total.sum(dim=1) / count.clamp(min=1), count > 0


def to_numpy(value: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy() if value.is_floating_point() else value.cpu().numpy()
    return np.asarray(value)


def channel_argmax(values: torch.Tensor) -> torch.Tensor:
    """``values.argmax(dim=1)`` of ``[B, C, ...]`` scores (first maximum on ties).

    On the CPU through numpy, which reduces over the strided class axis 3-4x faster than
    PyTorch does (it decides every chunk of a whole slide).
    """
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64) and not values.requires_grad:
        return torch.from_numpy(values.numpy().argmax(axis=1))
    return values.argmax(dim=1)
