"""Datasets and samplers: deterministic samples, rank-split streams, exact resume, missing labels."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from vismtl.data import MultiTaskDataset, ScenesDataset, build_train_loader
from vismtl.data.samplers import EvalSampler, TrainSampler
from vismtl.tasks import build_tasks

TASKS = build_tasks(
    dict(
        semseg=dict(kind="semseg", num_classes=7),
        parts=dict(kind="parts", num_classes=4),
        saliency=dict(kind="saliency"),
        normals=dict(kind="normals"),
        depth=dict(kind="depth"),
        edge=dict(kind="edge"),
    )
)


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_two_ranks_with_half_batches_see_the_one_rank_stream():
    single = take(TrainSampler(50, batch_size=4, seed=3), 40)
    rank0 = take(TrainSampler(50, batch_size=2, seed=3, rank=0, world_size=2), 20)
    rank1 = take(TrainSampler(50, batch_size=2, seed=3, rank=1, world_size=2), 20)
    merged = []
    for step in range(10):
        merged += rank0[2 * step : 2 * step + 2] + rank1[2 * step : 2 * step + 2]
    assert merged == single


def test_resumed_sampler_continues_the_stream():
    full = take(TrainSampler(30, batch_size=4, seed=1), 60)
    resumed = take(TrainSampler(30, batch_size=4, seed=1, start_batch=7), 32)
    assert resumed == full[28:]


def test_each_epoch_is_a_permutation_and_epochs_differ():
    stream = [index for index, _ in take(TrainSampler(20, batch_size=5, seed=0), 40)]
    assert sorted(stream[:20]) == list(range(20)) and sorted(stream[20:]) == list(range(20))
    assert stream[:20] != stream[20:]
    seeds = [seed for _, seed in take(TrainSampler(20, batch_size=5, seed=0), 40)]
    assert len(set(seeds)) == 40  # every sample position gets its own augmentation seed


def test_eval_shards_are_disjoint_and_complete():
    shards = [list(EvalSampler(11, rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    assert [len(s) for s in shards] == [4, 4, 3]


def test_scenes_items_have_every_target():
    dataset = ScenesDataset(TASKS, length=4, size=(48, 64), seed=2)
    item = dataset[1]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 48, 64)
    assert item["semseg"].dtype == torch.int64 and item["semseg"].shape == (48, 64)
    assert item["normals"].shape == (3, 48, 64) and item["depth"].shape == (48, 64)
    assert item["task_mask"].tolist() == [True] * 6
    torch.testing.assert_close(dataset[1]["depth"], item["depth"])
    assert not torch.equal(dataset[2]["image"], item["image"])


def test_augmented_item_depends_only_on_index_and_seed():
    flip = [dict(type="HorizontalFlip", p=0.5), dict(type="ColorJitter", p=1.0)]
    dataset = ScenesDataset(TASKS, length=4, size=(32, 32), transforms=flip)
    a, b, c = dataset[(2, 11)], dataset[(2, 11)], dataset[(2, 12)]
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])


class PartlyLabelled(MultiTaskDataset):
    """Even samples lack depth; every sample lacks edges."""

    def __len__(self):
        return 4

    def load(self, index):
        from vismtl.data.scene_renderer import render_scene

        raw = render_scene(0, index, 32, 32)
        raw.pop("edge")
        if index % 2 == 0:
            raw.pop("depth")
        return raw


def test_missing_fields_become_empty_targets_and_mask_false():
    dataset = PartlyLabelled(TASKS)
    names = list(TASKS)
    even, odd = dataset[0], dataset[1]
    assert not even["task_mask"][names.index("depth")] and odd["task_mask"][names.index("depth")]
    assert not even["task_mask"][names.index("edge")]
    assert (even["depth"] == 0).all() and (even["edge"] == 255).all()
    assert even["task_mask"][names.index("semseg")]


def test_loader_batches_are_identical_with_and_without_workers():
    dataset = ScenesDataset(TASKS, length=16, size=(32, 32), transforms=[dict(type="HorizontalFlip", p=0.5)])
    batches = []
    for workers in (0, 2):
        loader = build_train_loader(dataset, batch_size=4, num_workers=workers, seed=5)
        batches.append(list(itertools.islice(iter(loader), 3)))
    for a, b in zip(*batches):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])
        assert a["meta"]["index"].tolist() == b["meta"]["index"].tolist()
    assert np.unique(np.concatenate([b["meta"]["index"].numpy() for b in batches[0]])).size == 12
