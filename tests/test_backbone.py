"""timm backbones: multi-scale NCHW features, strides from feature_info, offline weights."""

from __future__ import annotations

import pytest
import timm
import torch

from vismtl.backbones import Backbone
from vismtl.config import ConfigError


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("test_resnet", {}),
        ("test_convnext", {}),
        ("test_vit", {"out_indices": (1, 3, 5)}),
    ],
)
@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_features_match_channels_and_reductions(name, kwargs, size):
    backbone = Backbone(name, **kwargs)
    features = backbone(torch.randn(2, 3, *size))
    assert len(features) == len(backbone.channels) == len(backbone.reductions)
    for feature, channels, reduction in zip(features, backbone.channels, backbone.reductions):
        # Strided convs round up or down depending on the family's padding.
        assert feature.shape[:2] == (2, channels)
        assert feature.shape[2] in (size[0] // reduction, -(-size[0] // reduction))
        assert feature.shape[3] in (size[1] // reduction, -(-size[1] // reduction))


def test_cnn_uses_feature_levels():
    backbone = Backbone("test_resnet", out_indices=(1, 2, 3, 4))
    assert backbone.reductions == [4, 8, 16, 32] and not backbone.is_vit


def test_vit_taps_blocks_and_handles_non_square_inputs():
    """ViT-B-like default taps, position embedding resized for 448x576 on the fly."""
    backbone = Backbone("test_vit")
    assert backbone.is_vit and backbone.out_indices == [1, 2, 3, 5]  # 6 blocks: about evenly spaced
    features = backbone(torch.randn(1, 3, 448, 576))
    assert all(f.shape == (1, 64, 28, 36) for f in features)


def test_vit_taps_are_the_blocks_outputs():
    """The tapped maps are the tokens after the named blocks, reshaped to the grid."""
    torch.manual_seed(0)
    backbone = Backbone("test_vit", out_indices=(2,)).eval()
    vit = backbone.model
    x = torch.randn(1, 3, 64, 64)
    tokens = vit.patch_embed(x)
    tokens = vit._pos_embed(tokens)
    tokens = vit.norm_pre(tokens)
    for block in vit.blocks[:3]:
        tokens = block(tokens)
    grid = tokens[:, vit.num_prefix_tokens :].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    torch.testing.assert_close(backbone(x)[0], grid)


def test_pretrained_weights_from_local_file(tmp_path):
    """An offline machine loads weights from a file; the features use exactly those weights."""
    torch.manual_seed(1)
    source = timm.create_model("test_resnet")
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    backbone = Backbone("test_resnet", pretrained_file=str(path))
    torch.testing.assert_close(backbone.model.conv1[0].weight, source.conv1[0].weight)
    fresh = Backbone("test_resnet")
    assert not torch.equal(fresh.model.conv1[0].weight, source.conv1[0].weight)


def test_unknown_backbone_names_the_model():
    with pytest.raises(ConfigError, match=r"unknown backbone 'convnext_tinyy'.*did you mean 'convnext_tiny'"):
        Backbone("convnext_tinyy")


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"pretrained_file not found: .*nothing\.pth"):
        Backbone("test_resnet", pretrained_file=str(tmp_path / "nothing.pth"))


def test_vit_out_of_range_tap():
    with pytest.raises(ConfigError, match=r"has 6 blocks; out_indices \[9\] are out of range"):
        Backbone("test_vit", out_indices=(2, 9))


def test_cnn_out_of_range_level():
    with pytest.raises(ConfigError, match=r"'test_convnext' has 4 feature levels \(0..3\); out_indices \[4\]"):
        Backbone("test_convnext", out_indices=(1, 2, 3, 4))
