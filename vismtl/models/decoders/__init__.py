"""Decoders: backbone features -> one feature map per task. Registry keyed by config name."""

from torch import nn

from vismtl.models.decoders.hps import HPSDecoder
from vismtl.models.decoders.taskexpert import TaskExpertDecoder
from vismtl.models.decoders.unet import CerberusDecoder

DECODERS: dict[str, type[nn.Module]] = {
    "hps": HPSDecoder,
    "taskexpert": TaskExpertDecoder,
    "cerberus": CerberusDecoder,
}

__all__ = ["DECODERS", "CerberusDecoder", "HPSDecoder", "TaskExpertDecoder"]
