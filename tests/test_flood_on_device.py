"""vismtl.tasks.flood_on_device: the nuclei's decisions made with PyTorch (on a GPU in the slide engine)
are the CPU's, ids and numbering included. PyTorch runs the same code on the CPU here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from vismtl.tasks import build_tasks
from vismtl.tasks.flood_on_device import components_on_device, flood_on_device, remove_small_on_device
from vismtl.tasks.instance_targets import label_components, remove_small, watershed_cues, watershed_from_cues


def crowded_probabilities(rng, shape=(90, 110), levels: int | None = None) -> torch.Tensor:
    """``[3, H, W]`` crowded blob-like probabilities; ``levels``: quantised to that many steps, so
    that rises tie and the flood's scan order decides."""
    field = ndi.gaussian_filter(rng.random(shape), 2.0)
    interior = np.clip((field - field.mean()) / field.std() * 0.35 + 0.45, 0, 1)
    contour = np.clip(rng.random(shape) * (1 - interior), 0, 1)
    if levels:
        interior, contour = np.round(interior * levels) / levels, np.floor(contour * levels) / levels
    return torch.from_numpy(np.stack([1 - interior - contour, interior, contour]))


def crowded_cues(rng, shape=(90, 110), levels: int | None = None) -> dict[str, torch.Tensor]:
    return watershed_cues(crowded_probabilities(rng, shape, levels))


def test_components_are_scipys_numbering_included() -> None:
    rng = np.random.default_rng(0)
    masks = [rng.random((40, 50)) < p for p in (0.1, 0.45, 0.6, 0.9)]
    spiral = np.zeros((41, 41), bool)  # one long winding component: many rounds of propagation
    for k in range(0, 20, 2):
        spiral[k, k : 41 - k] = spiral[k : 41 - k, 40 - k] = spiral[40 - k, k + 2 : 41 - k] = True
        spiral[k + 2 : 41 - k, k + 2] = True
    masks += [spiral, np.ones((7, 9), bool), np.zeros((5, 5), bool), rng.random((1, 30)) < 0.5]
    for mask in masks:
        np.testing.assert_array_equal(components_on_device(torch.from_numpy(mask)).numpy(), label_components(mask))


@pytest.mark.parametrize("min_size", [1, 3, 10])
def test_remove_small_is_the_cpus(min_size) -> None:
    labels = label_components(np.random.default_rng(min_size).random((60, 70)) < 0.5)
    got = remove_small_on_device(torch.from_numpy(labels), min_size).numpy()
    np.testing.assert_array_equal(got, remove_small(labels, min_size))


@pytest.mark.parametrize("levels", [None, 4, 8])
def test_the_flood_is_the_cpus_also_where_rises_tie(levels) -> None:
    rng = np.random.default_rng(7)
    for _ in range(6):
        cues = crowded_cues(rng, levels=levels)
        expected = watershed_from_cues(**{n: v.numpy() for n, v in cues.items()}, band=3)
        assert expected.max() > 5
        np.testing.assert_array_equal(flood_on_device(**cues).numpy(), expected)


def test_what_is_not_a_one_ring_flood_is_left_to_the_cpu() -> None:
    cues = crowded_cues(np.random.default_rng(1))
    outside = {**cues, "mask": cues["mask"] & (torch.rand(cues["mask"].shape) > 0.05)}  # markers outside the mask
    assert flood_on_device(**outside) is None
    assert flood_on_device(**{**cues, "rise": cues["rise"] * 3}) is None


def test_labels_decided_elsewhere_pass_through_as_int32() -> None:
    """What pixel_cues returns on a GPU (ids, narrowed for the finishing processes) decides as it is."""
    task = build_tasks({"nuclei": dict(kind="instance", band=3, postprocess="watershed", min_size=10)})["nuclei"]
    cues = crowded_cues(np.random.default_rng(2))
    labels = flood_on_device(**cues)
    decided = task.decide_from_cues({"labels": labels[None].to(torch.uint8 if labels.max() < 256 else torch.int32)})
    assert decided.dtype == torch.int32 and torch.equal(decided[0], labels)
    probabilities = crowded_probabilities(np.random.default_rng(4))[None]
    assert set(task.pixel_cues(probabilities)) == {"mask", "marked", "rise"}  # by default the cues
    made = task.pixel_cues(probabilities, decide=True)  # decided where they are (here the CPU)
    assert set(made) == {"labels"} and torch.equal(task.decide_from_cues(made), task.decide(probabilities))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_pixel_cues_are_the_cpus_decisions() -> None:
    task = build_tasks({"nuclei": dict(kind="instance", band=3, postprocess="watershed", min_size=10)})["nuclei"]
    rng = np.random.default_rng(3)
    probabilities = torch.stack([crowded_probabilities(rng, levels=levels) for levels in (None, 8)])
    made = task.pixel_cues(probabilities.cuda(), decide=True)
    assert set(made) == {"labels"} and made["labels"].is_cuda
    torch.testing.assert_close(task.decide_from_cues(made), task.decide(probabilities), rtol=0, atol=0)
