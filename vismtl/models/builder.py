"""Build a MultiTaskModel from the ``model`` section of a config and the tasks."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from vismtl.backbones import Backbone
from vismtl.config import ConfigError, call_with_config, check_keys, suggest
from vismtl.models.decoders import DECODERS
from vismtl.models.multitask import MultiTaskModel
from vismtl.tasks import Task


def build_model(cfg: Mapping[str, Any], tasks: Mapping[str, Task]) -> MultiTaskModel:
    """``model = dict(backbone=dict(name=...), decoder=dict(type='hps', ...))`` -> model.

    The decoder receives the backbone's ``in_channels`` (and ``reductions`` if it asks for
    them) and the task names; each head is a 1x1 conv to the task's number of outputs.
    """
    check_keys(cfg, ("backbone", "decoder", "input_mean", "input_std"), "model")
    backbone = call_with_config(Backbone, cfg.get("backbone"), "model.backbone")
    decoder_cfg = dict(cfg.get("decoder") or {"type": "hps"})
    kind = decoder_cfg.pop("type", "hps")
    if kind not in DECODERS:
        raise ConfigError(f"unknown decoder type '{kind}'{suggest(kind, DECODERS)}; known: {', '.join(DECODERS)}")
    decoder_cls = DECODERS[kind]
    extra = {"in_channels": backbone.channels, "task_names": list(tasks)}
    wanted = inspect.signature(decoder_cls).parameters
    if "reductions" in wanted:
        extra["reductions"] = backbone.reductions
    if "dense" in wanted:  # decoders with image-level heads (patch classes) need to know which
        extra["dense"] = {name: task.dense for name, task in tasks.items()}
    decoder = call_with_config(decoder_cls, decoder_cfg, "model.decoder", **extra)
    heads = {name: nn.Conv2d(decoder.out_channels[name], task.num_outputs, 1) for name, task in tasks.items()}
    normalisation = {k: tuple(cfg[k]) for k in ("input_mean", "input_std") if k in cfg}
    return MultiTaskModel(backbone, decoder, heads, dense={n: t.dense for n, t in tasks.items()}, **normalisation)


def model_signature(model: nn.Module) -> dict[str, list[int]]:
    """``{parameter or buffer name: shape}``: what a checkpoint must match to load."""
    return {name: list(value.shape) for name, value in model.state_dict().items()}
