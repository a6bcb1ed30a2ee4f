"""Optimizers and learning-rate schedules from the ``optimizer`` and ``schedule`` config sections."""

from __future__ import annotations

import math

import torch
from torch import nn

from vismtl.config import ConfigError, suggest

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def build_optimizer(
    model: nn.Module,
    type: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    backbone_lr_mult: float = 1.0,
    no_decay_norm_and_bias: bool = True,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD over the model's parameters.

    Args:
        backbone_lr_mult: learning-rate factor for parameters under ``backbone.``
            (e.g. 0.1 for a pretrained backbone).
        no_decay_norm_and_bias: no weight decay on 1-D parameters (norm scales, biases),
            the usual choice for AdamW.
    """
    if type not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer.type '{type}'{suggest(type, OPTIMIZERS)}; known: {', '.join(OPTIMIZERS)}")
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        mult = backbone_lr_mult if name.split(".", 1)[0] == "backbone" else 1.0
        decay = 0.0 if (no_decay_norm_and_bias and param.ndim <= 1) else weight_decay
        groups.setdefault((mult, decay), []).append(param)
    param_groups = [
        {"params": params, "lr": lr * mult, "weight_decay": decay} for (mult, decay), params in groups.items()
    ]
    extra = {"momentum": momentum} if type == "sgd" else {"betas": betas}
    return OPTIMIZERS[type](param_groups, lr=lr, **extra)


class LRFactor:
    """The factor applied to each group's base learning rate at an iteration.

    Linear warm-up from ``warmup_ratio`` over ``warmup_iters``, then ``poly``
    ((1 - t)^power), ``cosine`` (half cosine to ``min_ratio``), ``step`` (x ``gamma`` every
    ``step_iters`` iterations, as Cerberus' x0.1 every 75k) or ``constant``, where t is the
    share of the post-warm-up iterations done.
    """

    TYPES = ("poly", "cosine", "step", "constant")

    def __init__(
        self,
        max_iters: int,
        type: str = "poly",
        power: float = 0.9,
        min_ratio: float = 0.0,
        warmup_iters: int = 0,
        warmup_ratio: float = 1e-3,
        step_iters: int = 0,
        gamma: float = 0.1,
    ) -> None:
        if type not in self.TYPES:
            raise ConfigError(
                f"unknown schedule.type '{type}'{suggest(type, self.TYPES)}; known: {', '.join(self.TYPES)}"
            )
        if type == "step" and step_iters <= 0:
            raise ConfigError("schedule.type 'step' needs schedule.step_iters > 0")
        if warmup_iters < 0 or not 0 < warmup_ratio <= 1:
            raise ConfigError(
                f"schedule.warmup_iters must be 0 or more and schedule.warmup_ratio in (0, 1], not {warmup_iters} "
                f"and {warmup_ratio}"
            )
        self.max_iters, self.type, self.power, self.min_ratio = max_iters, type, power, min_ratio
        self.warmup_iters, self.warmup_ratio = warmup_iters, warmup_ratio
        self.step_iters, self.gamma = step_iters, gamma

    def __call__(self, iteration: int) -> float:
        if iteration < self.warmup_iters:
            return self.warmup_ratio + (1 - self.warmup_ratio) * iteration / self.warmup_iters
        span = max(self.max_iters - self.warmup_iters, 1)
        t = min((iteration - self.warmup_iters) / span, 1.0)
        if self.type == "poly":
            decayed = (1 - t) ** self.power
        elif self.type == "cosine":
            decayed = 0.5 * (1 + math.cos(math.pi * t))
        elif self.type == "step":
            return self.gamma ** ((iteration - self.warmup_iters) // self.step_iters)
        else:
            decayed = 1.0
        return self.min_ratio + (1 - self.min_ratio) * decayed


def build_scheduler(optimizer: torch.optim.Optimizer, max_iters: int, **cfg) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler: ``scheduler.step()`` after every optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(max_iters, **cfg))
