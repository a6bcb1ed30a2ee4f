"""Samplers whose output is a pure function of (seed, position), for exact resume and DDP.

The training stream is a sequence of epochs, each a permutation drawn from (seed, epoch).
Global batch ``j`` is the stream slice ``[j * B * W, (j + 1) * B * W)`` for ``W`` ranks of
``B`` samples; rank ``r`` takes the ``r``-th block of ``B``. Hence two ranks with half the
batch see exactly the samples one rank with the whole batch sees, and a run resumed at
batch ``j`` continues the very same stream. Each sample also gets its own augmentation
seed from its stream position, so augmentation does not depend on the worker that runs it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def derive_seed(*values: int) -> int:
    """A 31-bit seed from integers, well mixed (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0] >> 1)


class TrainSampler(Sampler):
    """Endless ``(index, augmentation_seed)`` pairs for one rank.

    Args:
        size: dataset length.
        batch_size: samples per batch on this rank.
        seed: the run's seed.
        rank, world_size: this process's place in a distributed run.
        start_batch: global batches already consumed (resume).
        shuffle: permute each epoch (otherwise take indices in order).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        shuffle: bool = True,
    ) -> None:
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.start_batch, self.shuffle = start_batch, shuffle
        self._epoch, self._order = -1, np.arange(size)

    def _index_at(self, position: int) -> int:
        epoch = position // self.size
        if self.shuffle and epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
            self._epoch = epoch
        return int(self._order[position % self.size])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        batch = self.start_batch
        while True:
            first = (batch * self.world_size + self.rank) * self.batch_size
            for position in range(first, first + self.batch_size):
                yield self._index_at(position), derive_seed(self.seed, position)
            batch += 1


class SourceMixSampler(TrainSampler):
    """Like :class:`TrainSampler`, but each stream position first draws a source by weight.

    For multi-source datasets (``source_sizes`` and ``source_weights``): every position
    draws its source with probability proportional to the weight and a sample of that
    source uniformly (with replacement), from a generator seeded by (seed, position), so
    batches mix sources in the configured proportions and the stream stays a pure
    function of the position (exact resume, rank-independent).
    """

    def __init__(self, source_sizes: list[int], source_weights: list[float], batch_size: int, **kwargs) -> None:
        super().__init__(sum(source_sizes), batch_size, **kwargs)
        weights = np.asarray(source_weights, dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"source weights must be non-negative and not all zero, got {source_weights}")
        self.probabilities = weights / weights.sum()
        self.offsets = np.cumsum([0, *source_sizes])

    def _index_at(self, position: int) -> int:
        rng = np.random.default_rng([self.seed, position, 1])
        source = int(rng.choice(len(self.probabilities), p=self.probabilities))
        size = int(self.offsets[source + 1] - self.offsets[source])
        return int(self.offsets[source]) + int(rng.integers(size))


class EvalSampler(Sampler):
    """Indices ``rank, rank + W, rank + 2W, ...``: disjoint shards with no padding.

    Padding shards with repeated samples (as ``DistributedSampler`` does) would count those
    samples twice in pooled metrics; uneven shards keep distributed evaluation exact.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
