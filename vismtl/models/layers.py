"""Small building blocks shared by the decoders."""

from __future__ import annotations

from torch import nn


def make_norm(norm: str, channels: int) -> nn.Module:
    """``"bn"`` (BatchNorm), ``"gn"`` (GroupNorm, 32 groups or fewer), ``"none"``."""
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "gn":
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm '{norm}' (use 'bn', 'gn' or 'none')")


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> ReLU, 'same' padding; no conv bias when a norm follows."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, norm: str = "bn") -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm == "none"),
            make_norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )
