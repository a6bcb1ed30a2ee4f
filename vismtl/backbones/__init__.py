"""Backbones: multi-scale feature extractors."""

from vismtl.backbones.timm_backbone import Backbone

__all__ = ["Backbone"]
