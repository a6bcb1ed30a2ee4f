"""Datasets, transforms and samplers. Add a dataset with its module and a line in ``DATASETS``."""

from vismtl.data.base import MultiTaskDataset
from vismtl.data.builder import DATASETS, build_dataset, build_eval_loader, build_train_loader
from vismtl.data.scenes import ScenesDataset

__all__ = ["DATASETS", "MultiTaskDataset", "ScenesDataset", "build_dataset", "build_eval_loader", "build_train_loader"]
