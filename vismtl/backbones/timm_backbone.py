"""Multi-scale NCHW features from any timm model.

CNNs (ResNet, ConvNeXt, EfficientNet, ...) go through timm's ``features_only`` wrapper.
Plain vision transformers (one token grid, no pyramid) go through
``forward_intermediates``: the tokens of the tapped blocks come back as NCHW grids, and
the position embedding is resized on the fly, so non-square inputs such as 448x576 work
(sizes that are not a multiple of the patch are padded).
Channels and strides are read from timm's ``feature_info``, never from the model name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn

from vismtl.config import ConfigError, suggest


def _is_plain_vit(model: nn.Module) -> bool:
    """A single-resolution transformer: patch embedding followed by a flat list of blocks."""
    return hasattr(model, "patch_embed") and hasattr(model, "blocks") and hasattr(model, "forward_intermediates")


def _check_model_name(name: str) -> None:
    if not timm.is_model(name):
        candidates = timm.list_models()
        raise ConfigError(
            f"unknown backbone '{name}': timm has no model of that name{suggest(name, candidates)}; "
            "see timm.list_models() for the names"
        )


def _check_levels(name: str, out_indices: Sequence[int], levels: int) -> None:
    bad = [i for i in out_indices if not -levels <= i < levels]
    if levels and bad:
        raise ConfigError(
            f"backbone '{name}' has {levels} feature levels (0..{levels - 1}); out_indices {bad} are out of range"
        )


class Backbone(nn.Module):
    """A timm model that returns a list of feature maps ``[B, C_i, H / r_i, W / r_i]``.

    Args:
        name: any timm model name (``"resnet50"``, ``"convnext_tiny"``, ``"vit_base_patch16_384"``).
        out_indices: which features to return: pyramid levels for CNNs (default: all),
            block indices for plain ViTs (default: four evenly spaced blocks, e.g. 2, 5, 8, 11
            for ViT-B, i.e. after blocks 3, 6, 9, 12).
        pretrained: load pretrained weights (from ``pretrained_file`` when given, otherwise
            from the hub, which needs internet).
        pretrained_file: a local ``.pth``/``.safetensors`` file of the timm model's weights,
            for offline machines.
        img_size: the size the ViT's position embedding is built for (weights are resampled
            to it on load); other input sizes still work, by resizing it on the fly.
        drop_path_rate: stochastic depth, where the model supports it.
        first_conv_stride: change the stride of the model's first convolution (e.g. 1 for
            Cerberus' ResNet-34, which keeps a full-resolution first feature); the strides
            of every feature are then measured again.

    Attributes:
        channels: channels of each returned feature.
        reductions: stride of each returned feature relative to the input.
    """

    def __init__(
        self,
        name: str,
        out_indices: Sequence[int] | None = None,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        img_size: int | Sequence[int] | None = None,
        drop_path_rate: float = 0.0,
        first_conv_stride: int | None = None,
    ) -> None:
        super().__init__()
        _check_model_name(name)
        self.name = name
        kwargs: dict = {"pretrained": pretrained or pretrained_file is not None}
        if pretrained_file is not None:
            if not Path(pretrained_file).is_file():
                raise ConfigError(f"backbone pretrained_file not found: {pretrained_file}")
            kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained_file)}
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate

        with torch.device("meta"):  # no memory, no weights: only tells the family apart
            probe = timm.create_model(name, pretrained=False)
        self.is_vit = _is_plain_vit(probe)
        if not self.is_vit and out_indices is not None:
            _check_levels(name, out_indices, len(getattr(probe, "feature_info", [])))
        try:
            if self.is_vit:
                self.model, self.out_indices = self._create_vit(name, out_indices, img_size, kwargs)
            else:
                self.model = timm.create_model(name, features_only=True, out_indices=out_indices, **kwargs)
                self.out_indices = list(self.model.feature_info.out_indices)
        except (OSError, RuntimeError) as err:
            if kwargs["pretrained"]:
                raise ConfigError(
                    f"cannot load pretrained weights for backbone '{name}'"
                    f"{' from ' + str(pretrained_file) if pretrained_file else ''}: {err}. "
                    "Offline? Pass model.backbone.pretrained_file=<local weights file>."
                ) from err
            raise

        if self.is_vit:
            info = self.model.feature_info
            self.channels = [info[i]["num_chs"] for i in self.out_indices]
            self.reductions = [info[i]["reduction"] for i in self.out_indices]
        else:
            self.channels = list(self.model.feature_info.channels())
            self.reductions = list(self.model.feature_info.reduction())
        if first_conv_stride is not None:
            self._set_first_conv_stride(first_conv_stride)

    def _set_first_conv_stride(self, stride: int) -> None:
        first = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise ConfigError(f"backbone '{self.name}' has no convolution whose stride could be set")
        first.stride = (stride, stride)
        probe = 64
        with torch.no_grad():
            was_training = self.training
            self.eval()
            sizes = [f.shape[-1] for f in self(torch.zeros(1, 3, probe, probe, device=first.weight.device))]
            self.train(was_training)
        self.reductions = [max(1, round(probe / s)) for s in sizes]

    @staticmethod
    def _create_vit(name, out_indices, img_size, kwargs):
        if img_size is not None:
            kwargs["img_size"] = img_size
        model = timm.create_model(name, num_classes=0, dynamic_img_size=True, dynamic_img_pad=True, **kwargs)
        depth = len(model.blocks)
        if out_indices is None:
            out_indices = sorted({max(round(depth * (k + 1) / 4) - 1, 0) for k in range(4)})
        out_indices = [i if i >= 0 else depth + i for i in out_indices]
        bad = [i for i in out_indices if not 0 <= i < depth]
        if bad:
            raise ConfigError(f"backbone '{name}' has {depth} blocks; out_indices {bad} are out of range")
        model.prune_intermediate_layers(out_indices, prune_norm=True, prune_head=True)
        return model, list(out_indices)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """image ``[B, 3, H, W]`` -> features ``[B, C_i, H / r_i, W / r_i]`` (ceil for odd sizes)."""
        if self.is_vit:
            return self.model.forward_intermediates(
                image, indices=self.out_indices, intermediates_only=True, output_fmt="NCHW"
            )
        return self.model(image)
