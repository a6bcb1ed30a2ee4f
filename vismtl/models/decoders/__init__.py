"""Decoders: backbone features -> one feature map per task. Registry keyed by config name."""

from torch import nn

from vismtl.models.decoders.hps import HPSDecoder

DECODERS: dict[str, type[nn.Module]] = {
    "hps": HPSDecoder,
}

__all__ = ["DECODERS", "HPSDecoder"]
