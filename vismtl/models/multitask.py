"""MultiTaskModel: one shared backbone, a decoder, and one head per task."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Collection, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MultiTaskModel(nn.Module):
    """``forward(image)`` returns ``{task: logits}``, dense tasks at the input resolution.

    Args:
        backbone: returns a list of feature maps (``vismtl.backbones.Backbone``).
        decoder: features -> ``{task: feature map}`` (see ``vismtl.models.decoders``).
        heads: ``{task: module}`` mapping the decoder's task feature to the task's logits.
        dense: ``{task: bool}``; dense tasks' logits are resized to the input size
            (image-level tasks, e.g. patch classes, are returned as they are).
        input_mean, input_std: per-channel normalisation of the image scaled to [0, 1]
            (ImageNet statistics by default; mean 0 and std 1 for "RGB / 255 only").

    The model takes the image as it comes from the datasets: RGB ``[B, 3, H, W]``, uint8 or
    float, in 0..255. Normalising inside the model keeps training, testing and slide
    inference in agreement.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decoder: nn.Module,
        heads: Mapping[str, nn.Module],
        dense: Mapping[str, bool] | None = None,
        input_mean: Sequence[float] = (0.485, 0.456, 0.406),
        input_std: Sequence[float] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.heads = nn.ModuleDict(heads)
        self.dense = {name: True for name in heads} | dict(dense or {})
        self._decoder_takes_grad_tasks = "grad_tasks" in inspect.signature(decoder.forward).parameters
        # Folded into one multiply-add: (x / 255 - mean) / std = x * scale + shift.
        std = torch.tensor(input_std, dtype=torch.float32)
        self.register_buffer("input_scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", (-torch.tensor(input_mean) / std).view(1, 3, 1, 1), persistent=False)

    @property
    def task_names(self) -> list[str]:
        return list(self.heads)

    def backbone_features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The normalised image through the backbone: the decoder's input."""
        return self.backbone(image.to(self.input_scale.dtype) * self.input_scale + self.input_shift)

    def forward(self, image: torch.Tensor, grad_tasks: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """image ``[B, 3, H, W]`` in 0..255 -> ``{task: [B, C_task, H, W]}`` (``[B, C_task]`` image-level).

        ``grad_tasks``: when given, the other tasks' decoders and heads run without gradients
        (tasks with no label in the batch), if the decoder supports it.
        """
        features = self.backbone_features(image)
        if grad_tasks is not None and self._decoder_takes_grad_tasks:
            features = self.decoder(features, grad_tasks=grad_tasks)
        else:
            features = self.decoder(features)
        size = image.shape[-2:]
        outputs = {}
        for name, head in self.heads.items():
            no_grad = grad_tasks is not None and name not in grad_tasks
            with torch.no_grad() if no_grad else contextlib.nullcontext():
                logits = head(features[name])
            if not self.dense[name]:
                outputs[name] = logits.flatten(1)
                continue
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            outputs[name] = logits
        return outputs
