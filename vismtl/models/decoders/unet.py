"""Cerberus decoders: one independent U-Net decoder per task, and a patch-classification head.

Graham et al., "One Model is All You Need: Multi-Task Learning Enables Simultaneous
Histology Image Segmentation and Classification", Medical Image Analysis 2023. With the
paper's encoder (ResNet-34 with a stride-1 first conv: features at strides 1, 2, 4, 8, 16
with 64, 64, 128, 256, 512 channels) each dense decoder is:

- a 1x1 conv of the deepest feature (512 -> 256);
- per level, from deep to shallow: bilinear x2 upsampling, **addition** of the skip
  feature, two 3x3 conv-BN-ReLU (the second one maps to the next skip's channels);
- a 1x1 conv-BN-ReLU to 96 channels; the model's 1x1 head maps 96 to the task's classes.

The patch classifier averages the central ``center_cells`` x ``center_cells`` cells of the
deepest feature (9 x 9 at stride 16 = the central 144 x 144 px), then an MLP.

Any timm CNN works as encoder: channels are read from the backbone, and a projection is
added wherever an upsampled map and its skip differ in width. Decoders of tasks without a
label in the batch can run without gradients (``grad_tasks``), as in partially labelled
multi-source training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vismtl.models.layers import ConvNormAct


class UNetLevel(nn.Module):
    """Upsample x2 to the skip's size, add the skip, two 3x3 conv-norm-ReLU."""

    def __init__(self, channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            ConvNormAct(channels, channels, 3, norm), ConvNormAct(channels, out_channels, 3, norm)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(x + skip)


class UNetTaskDecoder(nn.Module):
    """One task's U-Net decoder over features ``[finest, ..., deepest]``.

    ``max_width`` caps every level's width: skips wider than it are first projected by a
    1x1 conv (a light decoder for CPU training; None keeps the encoder's widths).
    """

    def __init__(
        self, in_channels: Sequence[int], bottleneck: int, out_channels: int, norm: str, max_width: int | None = None
    ) -> None:
        super().__init__()
        skips = list(in_channels[:-1])[::-1]  # deep -> shallow
        if not skips:
            raise ValueError("a U-Net decoder needs at least two encoder features")
        widths = [min(c, max_width) if max_width else c for c in skips]
        self.skip_projections = nn.ModuleList(
            ConvNormAct(c, w, 1, norm) if c != w else nn.Identity() for c, w in zip(skips, widths)
        )
        bottleneck = min(bottleneck, max_width) if max_width else bottleneck
        layers = [ConvNormAct(in_channels[-1], bottleneck, 1, norm)]
        if bottleneck != widths[0]:  # the paper's 256 equals the first skip's width; other encoders need this
            layers.append(ConvNormAct(bottleneck, widths[0], 1, norm))
        self.bottleneck = nn.Sequential(*layers)
        plan = widths + widths[-1:]
        self.levels = nn.ModuleList(UNetLevel(plan[i], plan[i + 1], norm) for i in range(len(widths)))
        self.output = ConvNormAct(plan[-1], out_channels, 1, norm)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.bottleneck(features[-1])
        for level, project, skip in zip(self.levels, self.skip_projections, reversed(features[:-1])):
            x = level(x, project(skip))
        return self.output(x)


class PatchClassifier(nn.Module):
    """Average of the central cells of the deepest feature, then a two-layer MLP -> ``[B, hidden, 1, 1]``."""

    def __init__(self, in_channels: int, hidden: int, center_cells: int) -> None:
        super().__init__()
        self.center_cells = center_cells
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True))

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        height, width = deepest.shape[-2:]
        cells_h, cells_w = min(self.center_cells, height), min(self.center_cells, width)
        top, left = (height - cells_h) // 2, (width - cells_w) // 2
        pooled = deepest[..., top : top + cells_h, left : left + cells_w].mean(dim=(2, 3))
        return self.mlp(pooled)[:, :, None, None]


class CerberusDecoder(nn.Module):
    """Independent U-Net decoders for dense tasks, a patch classifier for image-level tasks.

    Args:
        in_channels: channels of the encoder features, finest first.
        task_names: the tasks.
        dense: ``{task: bool}``; image-level tasks (patch classes) get the patch classifier.
        bottleneck: width after the 1x1 conv of the deepest feature (256 in the paper).
        out_channels: width of each dense decoder's output (96 in the paper).
        patch_hidden: hidden width of the patch classifier's MLP.
        center_cells: side of the central window of the deepest feature for patch classes.
        norm: ``"bn"``, ``"gn"`` or ``"none"``.
        max_width: cap on the dense decoders' widths (None: the encoder's, as in the paper).

    Attributes:
        out_channels: ``{task: channels}`` for the model's heads.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        task_names: Sequence[str],
        dense: Mapping[str, bool] | None = None,
        bottleneck: int = 256,
        out_channels: int = 96,
        patch_hidden: int = 256,
        center_cells: int = 9,
        norm: str = "bn",
        max_width: int | None = None,
    ) -> None:
        super().__init__()
        dense = {name: True for name in task_names} | dict(dense or {})
        self.decoders = nn.ModuleDict()
        self.out_channels = {}
        for name in task_names:
            if dense[name]:
                self.decoders[name] = UNetTaskDecoder(in_channels, bottleneck, out_channels, norm, max_width)
                self.out_channels[name] = out_channels
            else:
                self.decoders[name] = PatchClassifier(in_channels[-1], patch_hidden, center_cells)
                self.out_channels[name] = patch_hidden
        self.dense = dense

    def forward(
        self, features: Sequence[torch.Tensor], grad_tasks: Collection[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """``{task: [B, C, H_0, W_0]}`` for dense tasks, ``[B, C, 1, 1]`` for image-level ones.

        Tasks outside ``grad_tasks`` (when given) are decoded without building a graph.
        """
        out = {}
        for name, decoder in self.decoders.items():
            context = torch.no_grad() if grad_tasks is not None and name not in grad_tasks else contextlib.nullcontext()
            with context:
                out[name] = decoder(features) if self.dense[name] else decoder(features[-1])
        return out
