"""Models: MultiTaskModel = backbone + decoder + heads, and its builder."""

from vismtl.models.builder import build_model, model_signature
from vismtl.models.multitask import MultiTaskModel

__all__ = ["MultiTaskModel", "build_model", "model_signature"]
