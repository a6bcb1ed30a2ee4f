"""The hard-parameter-sharing baseline: one light decoder per task on the shared features.

Each task projects every backbone feature to ``channels`` with a 1x1 conv, resizes them
to the finest tapped resolution, sums them (an FPN without the top-down path) and refines
the sum with ``num_convs`` 3x3 convs. This is the "multi-task baseline" of the
PASCAL-Context / NYUD-v2 literature; with a single task it is the single-task baseline
that Delta_m compares against.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vismtl.models.layers import ConvNormAct


class TaskDecoder(nn.Module):
    """Fuse multi-scale features into one map ``[B, channels, H / r_min, W / r_min]``."""

    def __init__(self, in_channels: Sequence[int], channels: int, num_convs: int, norm: str, upsample: int = 1) -> None:
        super().__init__()
        self.upsample = upsample
        self.lateral = nn.ModuleList(ConvNormAct(c, channels, 1, norm) for c in in_channels)
        self.refine = nn.Sequential(*(ConvNormAct(channels, channels, 3, norm) for _ in range(num_convs)))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = tuple(s * self.upsample for s in features[0].shape[-2:])
        fused = 0
        for lateral, feature in zip(self.lateral, features):
            projected = lateral(feature)
            if projected.shape[-2:] != size:
                projected = F.interpolate(projected, size=size, mode="bilinear", align_corners=False)
            fused = fused + projected
        return self.refine(fused)


class HPSDecoder(nn.Module):
    """One :class:`TaskDecoder` per task.

    Args:
        in_channels: channels of the backbone features, finest first.
        task_names: the tasks to decode.
        channels: width of every task decoder.
        num_convs: 3x3 convs after fusion.
        norm: ``"bn"``, ``"gn"`` or ``"none"``.
        upsample: fuse at this multiple of the finest feature's resolution (e.g. 4 for a
            ViT, whose features are all at stride 16, to decode at stride 4).

    Attributes:
        out_channels: ``{task: channels}`` for the heads.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        task_names: Sequence[str],
        channels: int = 64,
        num_convs: int = 2,
        norm: str = "bn",
        upsample: int = 1,
    ) -> None:
        super().__init__()
        self.decoders = nn.ModuleDict(
            {name: TaskDecoder(in_channels, channels, num_convs, norm, upsample) for name in task_names}
        )
        self.out_channels = {name: channels for name in task_names}

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """features ``[B, C_i, H_i, W_i]`` finest first -> ``{task: [B, channels, u H_0, u W_0]}``."""
        return {name: decoder(features) for name, decoder in self.decoders.items()}
