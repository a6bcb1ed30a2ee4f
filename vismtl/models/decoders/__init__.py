"""Decoders: backbone features -> one feature map per task. Registry keyed by config name."""

from torch import nn

from vismtl.models.decoders.hps import HPSDecoder
from vismtl.models.decoders.taskexpert import TaskExpertDecoder

DECODERS: dict[str, type[nn.Module]] = {
    "hps": HPSDecoder,
    "taskexpert": TaskExpertDecoder,
}

__all__ = ["DECODERS", "HPSDecoder", "TaskExpertDecoder"]
