"""Each task's per-sample loss by hand on tiny tensors, and the masked multi-task total."""

from __future__ import annotations

import math

import pytest
import torch

from vismtl.engine.losses import multitask_loss
from vismtl.tasks.depth import DepthTask
from vismtl.tasks.edge import EdgeTask
from vismtl.tasks.normals import NormalsTask
from vismtl.tasks.saliency import SaliencyTask
from vismtl.tasks.semseg import SemsegTask


def softplus(x: float) -> float:
    """log(1 + e^x): BCE with logit x is softplus(-x) for label 1 and softplus(x) for label 0."""
    return math.log1p(math.exp(x))


def assert_loss(result, expected_loss: list[float], expected_has: list[bool]) -> None:
    loss, has_label = result
    assert loss.shape == (len(expected_loss),)
    assert has_label.tolist() == expected_has
    torch.testing.assert_close(loss, torch.tensor(expected_loss), rtol=1e-6, atol=1e-7)


def test_semseg_cross_entropy_with_ignore():
    """CE averaged over a sample's valid pixels; a sample with none has has_label False and loss 0."""
    # sample 0: pixel logits [2, 1, 0] -> class 0, [0, 0, 0] -> class 2, [1, 3, -1] -> ignored
    logits = torch.tensor([[[[2.0, 0.0, 1.0]], [[1.0, 0.0, 3.0]], [[0.0, 0.0, -1.0]]]]).repeat(2, 1, 1, 1)
    target = torch.tensor([[[0, 2, 255]], [[255, 255, 255]]])
    ce_first = math.log(math.exp(2) + math.exp(1) + 1) - 2  # 0.40761
    ce_second = math.log(3)
    assert_loss(SemsegTask(num_classes=3).loss(logits, target), [(ce_first + ce_second) / 2, 0.0], [True, False])


def test_saliency_class_balanced_bce_by_hand():
    """1x1x2x2, one positive of 4: positives weighted 3/4 (negative fraction), negatives 1/4."""
    logits = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]])
    target = torch.tensor([[[1, 0], [0, 0]]], dtype=torch.uint8)
    expected = (0.75 * softplus(-1.0) + 0.25 * (softplus(-2.0) + softplus(0.5) + softplus(3.0))) / 4
    assert_loss(SaliencyTask().loss(logits, target), [expected], [True])


def test_saliency_weights_are_per_image_and_skip_ignore():
    """With an ignored pixel the weights use the 3 valid pixels; each image's loss is independent of the batch."""
    logits = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]], [[[0.2, 0.4], [-0.3, 1.5]]]])
    target = torch.tensor([[[1, 0], [255, 0]], [[1, 1], [1, 0]]], dtype=torch.uint8)
    # image 0: 1 positive of 3 valid -> pos weight 2/3, neg weight 1/3; the ignored 0.5 is skipped
    first = (2 / 3 * softplus(-1.0) + 1 / 3 * (softplus(-2.0) + softplus(3.0))) / 3
    # image 1: 3 positives of 4 -> pos weight 1/4, neg weight 3/4
    second = (0.25 * (softplus(-0.2) + softplus(-0.4) + softplus(0.3)) + 0.75 * softplus(1.5)) / 4
    task = SaliencyTask()
    assert_loss(task.loss(logits, target), [first, second], [True, True])
    assert_loss(task.loss(logits[1:], target[1:]), [second], [True])
    all_ignored = torch.full((1, 2, 2), 255, dtype=torch.uint8)
    assert_loss(task.loss(logits[:1], all_ignored), [0.0], [False])


def test_edge_weighted_bce_by_hand():
    """Positives x0.95, negatives x0.05, the 255 pixel skipped, mean over the 3 valid pixels."""
    logits = torch.tensor([[[[2.0, -1.0], [0.3, -0.5]]]])
    target = torch.tensor([[[1, 0], [255, 0]]], dtype=torch.uint8)
    expected = (0.95 * softplus(-2.0) + 0.05 * softplus(-1.0) + 0.05 * softplus(-0.5)) / 3
    assert_loss(EdgeTask().loss(logits, target), [expected], [True])


def test_depth_l1_over_valid_pixels():
    """L1 over pixels with gt > 0: (0.5 + 0.5 + 3) / 3; an all-zero gt gives has_label False."""
    logits = torch.tensor([[[[1.0, 2.5], [3.0, 7.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    target = torch.tensor([[[1.5, 2.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    assert_loss(DepthTask().loss(logits, target), [4.0 / 3.0, 0.0], [True, False])


def test_normals_l1_on_normalised_prediction():
    """(0,0,2) vs (0,0,1) costs 0; (3,0,4) -> (0.6,0,0.8) vs (1,0,0) costs 1.2/3; zero targets skipped."""
    logits = torch.tensor([[0.0, 0.0, 2.0], [3.0, 0.0, 4.0], [5.0, 5.0, 5.0]]).T.reshape(1, 3, 1, 3)
    target = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 3)
    assert_loss(NormalsTask().loss(logits, target), [(0.0 + 1.2 / 3) / 2], [True])


def test_normals_scaled_prediction_in_right_direction_costs_zero():
    """A prediction of length 2 along the target's direction gives loss exactly 0."""
    target = torch.nn.functional.normalize(torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    loss, has_label = NormalsTask().loss(2.0 * target, target)
    assert has_label.tolist() == [True, True]
    torch.testing.assert_close(loss, torch.zeros(2), rtol=0, atol=1e-7)


# ------------------------------------------------------------- multitask_loss


def multitask_setup():
    """Three tasks, 4 samples, a task_mask with unlabelled samples and one labelled-but-empty target."""
    gen = torch.Generator().manual_seed(0)
    tasks = {
        "semseg": SemsegTask(num_classes=3, loss_weight=1.0),
        "depth": DepthTask(loss_weight=2.0),
        "normals": NormalsTask(loss_weight=10.0),
    }
    outputs = {
        "semseg": torch.randn(4, 3, 3, 4, generator=gen).requires_grad_(),
        "depth": torch.randn(4, 1, 3, 4, generator=gen).requires_grad_(),
        "normals": torch.randn(4, 3, 3, 4, generator=gen).requires_grad_(),
    }
    semseg = torch.randint(0, 3, (4, 3, 4), generator=gen)
    semseg[3] = 255  # marked labelled below, but has no valid pixel: must not count
    batch = {
        "semseg": semseg,
        "depth": torch.rand(4, 3, 4, generator=gen) + 0.5,
        "normals": torch.nn.functional.normalize(torch.randn(4, 3, 3, 4, generator=gen), dim=1),
        # columns follow the task order: semseg, depth, normals
        "task_mask": torch.tensor([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 0, 1]], dtype=torch.bool),
    }
    labelled = {"semseg": [0, 2], "depth": [0, 1], "normals": [1, 2, 3]}
    return tasks, outputs, batch, labelled


def labelled_mean(task, logits: torch.Tensor, target: torch.Tensor, samples: list[int]) -> float:
    """The task's mean per-sample loss over ``samples`` only (computed on that subset alone)."""
    index = torch.tensor(samples)
    per_sample, has_label = task.loss(logits[index].detach(), target[index])
    assert has_label.all()
    return per_sample.mean().item()


def test_multitask_loss_is_weighted_mean_over_labelled_samples():
    """Total = sum_t w_t * mean of task t's per-sample loss over its labelled samples only."""
    tasks, outputs, batch, labelled = multitask_setup()
    result = multitask_loss(outputs, batch, tasks)
    expected = sum(t.loss_weight * labelled_mean(t, outputs[n], batch[n], labelled[n]) for n, t in tasks.items())
    assert result.total.item() == pytest.approx(expected, rel=1e-6)
    assert result.counts.tolist() == [2.0, 2.0, 3.0]
    per_task = result.per_task(list(tasks))
    for name, task in tasks.items():
        mean = labelled_mean(task, outputs[name], batch[name], labelled[name])
        assert per_task[name] == pytest.approx(mean, rel=1e-6)


def test_multitask_loss_no_gradient_from_unlabelled_samples():
    """Gradients w.r.t. an unlabelled sample's logits of that task are exactly zero; labelled ones are not."""
    tasks, outputs, batch, labelled = multitask_setup()
    multitask_loss(outputs, batch, tasks).total.backward()
    for name, logits in outputs.items():
        for sample in range(4):
            grad = logits.grad[sample]
            if sample in labelled[name]:
                assert grad.abs().sum().item() > 0, (name, sample)
            else:
                assert torch.equal(grad, torch.zeros_like(grad)), (name, sample)


def test_multitask_loss_task_without_labels_contributes_zero():
    """A task with no labelled sample in the batch adds 0 to the total and gets zero gradient."""
    tasks, outputs, batch, labelled = multitask_setup()
    batch["task_mask"][:, 1] = False  # no depth labels
    result = multitask_loss(outputs, batch, tasks)
    expected = sum(
        tasks[n].loss_weight * labelled_mean(tasks[n], outputs[n], batch[n], labelled[n]) for n in ("semseg", "normals")
    )
    assert result.total.item() == pytest.approx(expected, rel=1e-6)
    assert result.counts.tolist() == [2.0, 0.0, 3.0]
    assert result.per_task(list(tasks)).keys() == {"semseg", "normals"}
    result.total.backward()
    assert torch.equal(outputs["depth"].grad, torch.zeros_like(outputs["depth"]))
