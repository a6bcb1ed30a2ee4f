"""Tile blending for whole-slide inference: weighted accumulation of overlapping tiles into a canvas."""

from vismtl.ops.tile_blend.op import blend_tiles, normalise, normalise_
from vismtl.ops.tile_blend.reference import blend_tiles_reference, blend_window

__all__ = ["blend_tiles", "blend_tiles_reference", "blend_window", "normalise", "normalise_"]
