"""Engine: the training loop, evaluation, checkpoints, distributed helpers and logging."""

from vismtl.engine.api import test, train
from vismtl.engine.evaluator import evaluate

__all__ = ["evaluate", "test", "train"]
