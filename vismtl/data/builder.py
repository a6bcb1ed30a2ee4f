"""Build datasets and loaders from the ``data`` section of a config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from vismtl.config import ConfigError, call_with_config, suggest
from vismtl.data.histology import MultiSourceDataset
from vismtl.data.nyud import NYUDDataset
from vismtl.data.pascal_context import PascalContextDataset
from vismtl.data.samplers import EvalSampler, SourceMixSampler, TrainSampler
from vismtl.data.scenes import ScenesDataset
from vismtl.tasks import Task

DATASETS: dict[str, type[Dataset]] = {
    "scenes": ScenesDataset,
    "pascal_context": PascalContextDataset,
    "nyud": NYUDDataset,
    "histology": MultiSourceDataset,
}


def build_dataset(cfg: Mapping[str, Any], tasks: Mapping[str, Task], where: str = "data") -> Dataset:
    """``dict(type='scenes', **options)`` -> dataset producing targets for ``tasks``."""
    options = dict(cfg)
    kind = options.pop("type", None)
    if kind not in DATASETS:
        raise ConfigError(
            f"unknown dataset type '{kind}' in {where}{suggest(str(kind), DATASETS)}; known: {', '.join(DATASETS)}"
        )
    return call_with_config(DATASETS[kind], options, f"{where} ({kind})", tasks=tasks)


def build_train_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    start_batch: int = 0,
) -> DataLoader:
    """An endless loader over the stream of :class:`TrainSampler` (one rank's share)."""
    if hasattr(dataset, "source_weights"):  # multi-source: every batch mixes sources by weight
        sampler = SourceMixSampler(
            dataset.source_sizes,
            dataset.source_weights,
            batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            start_batch=start_batch,
        )
    else:
        sampler = TrainSampler(len(dataset), batch_size, seed, rank, world_size, start_batch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        # An own generator: creating loader iterators must not consume the global RNG,
        # or a resumed run would drift from an uninterrupted one.
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=4 if num_workers > 0 else None,
        drop_last=True,
    )


def build_eval_loader(
    dataset: Dataset, batch_size: int, num_workers: int, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """A finite loader over this rank's disjoint shard of ``dataset``."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EvalSampler(len(dataset), rank, world_size),
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(0),
    )
