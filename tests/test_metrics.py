"""Every task metric against values computed by hand, mmseg agreement and exact distributed merging."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vismtl.tasks import delta_m, load_baselines
from vismtl.tasks.base import channel_argmax
from vismtl.tasks.depth import DepthMetric, DepthTask
from vismtl.tasks.edge import EdgeMetric
from vismtl.tasks.normals import NormalsMetric, angular_error_deg
from vismtl.tasks.saliency import SaliencyMetric
from vismtl.tasks.semseg import ConfusionMatrixMetric, PartsTask, SemsegTask

# ------------------------------------------------------------------------- mIoU


def confusion(num_classes: int, pred, target) -> ConfusionMatrixMetric:
    """A ConfusionMatrixMetric after one update with ``[B, H, W]`` nested lists."""
    metric = ConfusionMatrixMetric(num_classes)
    metric.update(torch.tensor(pred), torch.tensor(target))
    return metric


# gt / pred 2 x 3 with one ignore pixel (its prediction, class 0, must not count):
#   (0,0) gt 0 -> 0 ok   (0,1) gt 0 -> 1      (0,2) gt 1 -> 1 ok
#   (1,0) gt 1 -> 1 ok   (1,1) gt 2 -> 2 ok   (1,2) ignored
# class 0: TP 1, gt 2, pred 1 -> union 2 -> IoU 1/2
# class 1: TP 2, gt 2, pred 3 -> union 3 -> IoU 2/3
# class 2: TP 1, gt 1, pred 1 -> union 1 -> IoU 1
TINY_GT = [[[0, 0, 1], [1, 2, 255]]]
TINY_PRED = [[[0, 1, 1], [1, 2, 0]]]


def test_confusion_tiny_example_exact_miou_and_aacc():
    """2x3, 3 classes, one ignore pixel: mIoU = (1/2 + 2/3 + 1) / 3, aAcc = 4/5."""
    scores = confusion(3, TINY_PRED, TINY_GT).compute()
    assert scores["mIoU"] == pytest.approx(100 * (1 / 2 + 2 / 3 + 1) / 3, abs=1e-12)  # 72.2222...
    assert scores["aAcc"] == pytest.approx(80.0, abs=1e-12)


def test_confusion_absent_class_left_out_of_mean():
    """Classes 3 and 4 occur in neither gt nor prediction: same mIoU as with 3 classes, NaN per-class IoU."""
    metric = confusion(5, TINY_PRED, TINY_GT)
    assert metric.compute()["mIoU"] == pytest.approx(100 * 13 / 18, abs=1e-12)
    iou = metric.per_class_iou()
    np.testing.assert_allclose(iou[:3], [50.0, 200 / 3, 100.0], atol=1e-12)
    assert np.isnan(iou[3]) and np.isnan(iou[4])


def test_confusion_class_only_predicted_counts_as_zero():
    """A class predicted but absent from the gt has IoU 0 and stays in the mean (as in mmseg)."""
    # gt [0, 0], pred [0, 1]: class 0 IoU 1/2, class 1 IoU 0/1 -> mIoU 25
    assert confusion(3, [[[0, 1]]], [[[0, 0]]]).compute()["mIoU"] == pytest.approx(25.0, abs=1e-12)


def test_confusion_pools_over_batches():
    """Two updates pool TP/FP/FN: 7/12, not the mean of per-image mIoUs (62.5)."""
    # image A: gt [0, 0], pred [0, 0] -> class 0 IoU 1 -> mIoU 100
    # image B: gt [0, 1], pred [1, 1] -> class 0 IoU 0/1, class 1 IoU 1/2 -> mIoU 25
    # pooled: class 0 TP 2, gt 3, pred 2 -> 2/3; class 1 TP 1, gt 1, pred 2 -> 1/2 -> mIoU (2/3 + 1/2)/2 = 7/12
    metric = ConfusionMatrixMetric(2)
    metric.update(torch.tensor([[[0, 0]]]), torch.tensor([[[0, 0]]]))
    metric.update(torch.tensor([[[1, 1]]]), torch.tensor([[[0, 1]]]))
    scores = metric.compute()
    assert scores["mIoU"] == pytest.approx(100 * 7 / 12, abs=1e-12)
    assert scores["mIoU"] != pytest.approx((100 + 25) / 2)
    assert scores["aAcc"] == pytest.approx(75.0, abs=1e-12)
    np.testing.assert_array_equal(metric.state["confusion"].numpy(), [[2, 1], [0, 1]])


def test_parts_all_ignore_image_adds_nothing():
    """PartsTask: an all-255 image (no person) leaves the metric state unchanged."""
    task = PartsTask()
    metric = task.new_metric()
    metric.update(torch.tensor([[[0, 3, 6], [1, 1, 2]]]), torch.tensor([[[0, 3, 5], [1, 255, 2]]]))
    before = {k: v.clone() for k, v in metric.state.items()}
    scores_before = metric.compute()
    metric.update(torch.tensor([[[4, 5, 6], [0, 1, 2]]]), torch.full((1, 2, 3), 255))
    for name, value in metric.state.items():
        assert torch.equal(value, before[name])
    assert metric.compute() == scores_before
    assert metric.state["confusion"].sum().item() == 5


def test_miou_matches_mmseg_iou_metric():
    """vismtl's pooled mIoU and aAcc equal mmseg's IoUMetric (rounded to 2 decimals) on random maps."""
    mmseg_eval = pytest.importorskip("mmseg.evaluation")
    num_classes = 6  # class 5 never occurs: both must leave it out of the mean
    gen = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 5, (4, 32, 40), generator=gen)
    labels = torch.randint(0, 5, (4, 32, 40), generator=gen)
    same = torch.rand((4, 32, 40), generator=gen) < 0.4  # make IoUs non-trivial
    labels = torch.where(same, preds, labels)
    labels[torch.rand((4, 32, 40), generator=gen) < 0.1] = 255
    labels[0, :5] = 255

    ref = mmseg_eval.IoUMetric(ignore_index=255, iou_metrics=["mIoU"])
    ref.dataset_meta = {"classes": tuple(f"c{i}" for i in range(num_classes))}
    for pred, label in zip(preds, labels):
        ref.process({}, [{"pred_sem_seg": {"data": pred[None]}, "gt_sem_seg": {"data": label[None]}}])
    expected = ref.compute_metrics(ref.results)

    ours = ConfusionMatrixMetric(num_classes)
    ours.update(preds[:3], labels[:3])
    ours.update(preds[3:], labels[3:])
    scores = ours.compute()
    # mmseg reports np.round(value * 100, 2): agreement to the rounding step
    assert scores["mIoU"] == pytest.approx(float(expected["mIoU"]), abs=1e-2)
    assert scores["aAcc"] == pytest.approx(float(expected["aAcc"]), abs=1e-2)
    assert 10 < scores["mIoU"] < 90  # a non-degenerate example


# --------------------------------------------------------------------- saliency

# probabilities and labels of 6 pixels (the 0.60 one is ignored: were it a negative, maxF would drop)
SAL_PROB = [[[0.90, 0.38, 0.31], [0.27, 0.10, 0.60]]]
SAL_LABEL = [[[1, 1, 1], [0, 0, 255]]]


def f_beta(tp: float, fp: float, fn: float, beta_sq: float = 0.3) -> float:
    p, r = tp / (tp + fp), tp / (tp + fn)
    return (1 + beta_sq) * p * r / (beta_sq * p + r)


def saliency_metric() -> SaliencyMetric:
    metric = SaliencyMetric()
    metric.update(torch.tensor(SAL_PROB), torch.tensor(SAL_LABEL, dtype=torch.uint8))
    return metric


def test_saliency_counts_at_thresholds():
    """Exact TP/FP/FN at thresholds 0.05, 0.30, 0.50 (pred salient if p > t); the ignore pixel is skipped."""
    s = saliency_metric().state
    # index 0 = 0.05: all 5 valid predicted; index 5 = 0.30: {0.90, 0.38, 0.31}; index 9 = 0.50: {0.90}
    for index, (tp, fp, fn) in [(0, (3, 2, 0)), (5, (3, 0, 0)), (9, (1, 0, 2))]:
        assert (s["tp"][index].item(), s["fp"][index].item(), s["fn"][index].item()) == (tp, fp, fn)
    assert s["tp"][-1].item() == 0 and s["fn"][-1].item() == 3  # 0.95: nothing predicted


def test_saliency_maxf_and_max_iou():
    """maxF (beta^2 = 0.3) is 100 at t = 0.30; at 0.05 F = 1.3 * 0.6 / 1.18; max_IoU = 100."""
    scores = saliency_metric().compute()
    assert scores["maxF"] == pytest.approx(100.0, abs=1e-9)
    assert scores["max_IoU"] == pytest.approx(100.0, abs=1e-9)
    assert f_beta(3, 2, 0) == pytest.approx(1.3 * 0.6 / (0.3 * 0.6 + 1.0))  # the hand formula itself


def test_saliency_double_sigmoid_by_hand():
    """maxF_double_sigmoid thresholds sigmoid(p): best is t = 0.55 with TP 3, FP 1 -> F = 0.975 / 1.225."""
    # sigmoid: 0.90 -> 0.7109, 0.38 -> 0.5939, 0.31 -> 0.5769, 0.27 -> 0.5671 (neg), 0.10 -> 0.5250 (neg)
    # t <= 0.50: all 5 -> TP 3 FP 2 (F 0.661); t = 0.55: TP 3 FP 1 (F 0.7959);
    # t = 0.60 .. 0.70: only 0.7109 -> TP 1 FN 2 (F 0.684); t >= 0.75: nothing (F 0)
    metric = saliency_metric()
    s = metric.state
    assert (s["ds_tp"][9].item(), s["ds_fp"][9].item(), s["ds_fn"][9].item()) == (3, 2, 0)  # t = 0.50
    assert (s["ds_tp"][10].item(), s["ds_fp"][10].item(), s["ds_fn"][10].item()) == (3, 1, 0)  # t = 0.55
    assert (s["ds_tp"][11].item(), s["ds_fp"][11].item(), s["ds_fn"][11].item()) == (1, 0, 2)  # t = 0.60
    assert s["ds_tp"][14].item() == 0  # t = 0.75
    expected = 100 * 1.3 * 0.75 * 1.0 / (0.3 * 0.75 + 1.0)  # P = 3/4, R = 1
    assert expected == pytest.approx(100 * 39 / 49)
    assert metric.compute()["maxF_double_sigmoid"] == pytest.approx(expected, abs=1e-9)


def test_saliency_pools_over_updates():
    """Split into two updates, counts and scores are those of one update."""
    whole = saliency_metric()
    split = SaliencyMetric()
    prob, label = torch.tensor(SAL_PROB), torch.tensor(SAL_LABEL, dtype=torch.uint8)
    split.update(prob[:, :1], label[:, :1])
    split.update(prob[:, 1:], label[:, 1:])
    for name in whole.state:
        assert torch.equal(whole.state[name], split.state[name])


# ------------------------------------------------------------------------ depth


def test_depth_metric_by_hand():
    """Pooled vs per-image RMSE, abs_rel and delta1 by hand; zero-depth pixels and all-zero images ignored."""
    # image A: gt [1, 2, 0, 4], pred [1.5, 2, 9, 3.5] -> valid errors 0.5, 0, 0.5 (the 9 is on gt 0)
    # image B: gt [2, 0, 0, 0], pred [4, 1, 1, 1]     -> valid error 2
    pred = torch.tensor([[[1.5, 2.0], [9.0, 3.5]], [[4.0, 1.0], [1.0, 1.0]]])
    gt = torch.tensor([[[1.0, 2.0], [0.0, 4.0]], [[2.0, 0.0], [0.0, 0.0]]])
    metric = DepthTask().new_metric()
    metric.update(pred, gt)
    metric.update(torch.full((1, 2, 2), 5.0), torch.zeros(1, 2, 2))  # no valid pixel: adds nothing
    scores = metric.compute()
    # pooled: sqrt((0.25 + 0 + 0.25 + 4) / 4) = sqrt(1.125)
    assert scores["rmse"] == pytest.approx(math.sqrt(1.125), rel=1e-6)  # 1.06066
    # per image: (sqrt(0.5 / 3) + sqrt(4 / 1)) / 2
    assert scores["rmse_per_image"] == pytest.approx((math.sqrt(0.5 / 3) + 2.0) / 2, rel=1e-6)  # 1.20412
    # abs_rel: (0.5/1 + 0/2 + 0.5/4 + 2/2) / 4
    assert scores["abs_rel"] == pytest.approx(1.625 / 4, rel=1e-6)
    # ratios max(p/g, g/p): 1.5 no, 1 yes, 4/3.5 = 1.143 yes, 2 no -> 2 of 4
    assert scores["delta1"] == pytest.approx(50.0, abs=1e-9)
    assert metric.state["pixels"].item() == 4 and metric.state["images"].item() == 2


# ---------------------------------------------------------------------- normals


def rotated(target: np.ndarray, axis: np.ndarray, degrees: float) -> np.ndarray:
    """``target`` rotated by ``degrees`` about ``axis`` (unit, perpendicular to target)."""
    a = math.radians(degrees)
    return target * math.cos(a) + np.cross(axis, target) * math.sin(a)


def test_normals_metric_known_angles():
    """Errors 0, 10, 20, 25, 60 deg + one invalid pixel: mean 23, median 20, rmse sqrt(945), 40/60/80 %."""
    g = np.array([1.0, 2.0, 2.0]) / 3.0
    k = np.array([2.0, 1.0, -2.0]) / 3.0  # unit, perpendicular to g
    angles = [0.0, 10.0, 20.0, 25.0, 60.0]
    preds = [rotated(g, k, a) for a in angles] + [np.array([0.0, 0.0, 1.0])]
    targets = [g] * 5 + [np.zeros(3)]  # the last pixel is invalid
    pred = torch.tensor(np.stack(preds), dtype=torch.float32).T.reshape(1, 3, 2, 3)
    target = torch.tensor(np.stack(targets), dtype=torch.float32).T.reshape(1, 3, 2, 3)
    metric = NormalsMetric()
    metric.update(pred, target)
    scores = metric.compute()
    assert metric.state["pixels"].item() == 5
    assert scores["mean"] == pytest.approx(115 / 5, abs=1e-4)
    assert abs(scores["median"] - 20.0) <= 0.01  # histogram bins of 0.01 deg
    assert scores["rmse"] == pytest.approx(math.sqrt((0 + 100 + 400 + 625 + 3600) / 5), abs=1e-4)
    assert scores["<11.25"] == pytest.approx(40.0, abs=1e-9)
    assert scores["<22.5"] == pytest.approx(60.0, abs=1e-9)
    assert scores["<30.0"] == pytest.approx(80.0, abs=1e-9)


def test_normals_atan2_accurate_for_tiny_angles():
    """At 1e-4 deg, 2 atan2(|p-g|, |p+g|) is accurate in float32 while acos(p . g) is badly off."""
    a = math.radians(1e-4)
    target = torch.tensor([[1.0, 0.0, 0.0]]).reshape(1, 3, 1, 1)
    pred = torch.tensor([[math.cos(a), math.sin(a), 0.0]], dtype=torch.float32).reshape(1, 3, 1, 1)
    error = angular_error_deg(pred, target).item()
    assert error == pytest.approx(1e-4, rel=1e-4)
    naive = math.degrees(torch.acos((pred * target).sum(dim=1).clamp(-1, 1)).item())
    assert abs(naive - 1e-4) > 0.5e-4  # float32 cos(1e-4 deg) rounds to 1: acos gives 0
    metric = NormalsMetric()
    metric.update(pred, target)
    assert metric.compute()["mean"] == pytest.approx(1e-4, rel=1e-4)


# ------------------------------------------------------------------------- edges

EDGE_SIZE = 48  # with max_dist 0.03: tol = 0.03 * 48 * sqrt(2) = 2.036 px


def line_map(col: int, value: float = 1.0) -> np.ndarray:
    """``[48, 48]`` map with a vertical segment at ``col``, rows 10..37 (clear of NMS's border ramp)."""
    image = np.zeros((EDGE_SIZE, EDGE_SIZE), np.float32)
    image[10:38, col] = value
    return image


def edge_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    metric = EdgeMetric(max_dist=0.03)
    metric.update(torch.from_numpy(pred)[None], torch.from_numpy(gt.astype(np.uint8))[None])
    return metric.compute()


@pytest.mark.parametrize(("shift", "expected"), [(0, 100.0), (2, 100.0), (3, 0.0)])
def test_edge_straight_line(shift, expected):
    """A prediction equal to the gt edge, or within 2.036 px, scores odsF 100; 3 px away scores 0."""
    scores = edge_scores(line_map(20 + shift), line_map(20))
    assert scores["odsF"] == expected
    assert scores["oisF"] == expected


def test_edge_ignore_pixels():
    """A false edge inside a 255 region is not counted (odsF 100); without the 255 it halves precision (F 2/3)."""
    pred = line_map(20) + line_map(35)
    gt = line_map(20).astype(np.uint8)
    assert edge_scores(pred, gt)["odsF"] == pytest.approx(100 * 2 * 0.5 / 1.5)  # P = 1/2, R = 1
    gt_ignored = gt.copy()
    gt_ignored[:, 33:38] = 255
    assert edge_scores(pred, gt_ignored)["odsF"] == 100.0


# ------------------------------------------------------------------------ delta_m


def test_delta_m_by_hand():
    """Delta_m over semseg (higher better) and depth (lower better) = (5% + 10%) / 2."""
    tasks = {"semseg": SemsegTask(), "depth": DepthTask()}
    results = {"semseg": {"mIoU": 42.0}, "depth": {"rmse": 0.45}}
    baselines = {"semseg": {"mIoU": 40.0}, "depth": {"rmse": 0.5}}
    # semseg: +(42 - 40) / 40 = +0.05; depth: -(0.45 - 0.5) / 0.5 = +0.10
    assert delta_m(results, baselines, tasks) == pytest.approx(100 * (0.05 + 0.10) / 2, abs=1e-12)
    worse = {"semseg": {"mIoU": 38.0}, "depth": {"rmse": 0.6}}  # -0.05 and -0.20
    assert delta_m(worse, baselines, tasks) == pytest.approx(-12.5, abs=1e-12)


def test_delta_m_missing_baseline_is_none():
    """A task without a baseline (or without its headline metric) gives None."""
    tasks = {"semseg": SemsegTask(), "depth": DepthTask()}
    results = {"semseg": {"mIoU": 42.0}, "depth": {"rmse": 0.45}}
    assert delta_m(results, {"semseg": {"mIoU": 40.0}}, tasks) is None
    assert delta_m(results, {"semseg": {"mIoU": 40.0}, "depth": {"abs_rel": 0.1}}, tasks) is None


def test_load_baselines_merges_files(tmp_path):
    """Two eval.json files merge per task, the later file winning on a shared metric."""
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"tasks": {"semseg": {"mIoU": 40.0, "aAcc": 80.0}}, "config": "x"}))
    second.write_text(json.dumps({"tasks": {"semseg": {"mIoU": 41.0}, "depth": {"rmse": 0.5}}}))
    merged = load_baselines([first, str(second)])
    assert merged == {"semseg": {"mIoU": 41.0, "aAcc": 80.0}, "depth": {"rmse": 0.5}}
    assert load_baselines(first) == {"semseg": {"mIoU": 40.0, "aAcc": 80.0}}


def test_load_baselines_task_template(tmp_path):
    """A path with {task} reads one eval.json per task; a missing one names its file."""
    for task, metrics in {"semseg": {"mIoU": 40.0}, "depth": {"rmse": 0.5}}.items():
        (tmp_path / f"stl_{task}").mkdir()
        (tmp_path / f"stl_{task}" / "eval.json").write_text(json.dumps({"tasks": {task: metrics}}))
    template = str(tmp_path / "stl_{task}" / "eval.json")
    assert load_baselines(template, ["semseg", "depth"]) == {"semseg": {"mIoU": 40.0}, "depth": {"rmse": 0.5}}
    with pytest.raises(FileNotFoundError, match=r"stl_edge.eval\.json"):
        load_baselines(template, ["semseg", "edge"])


def test_load_baselines_errors(tmp_path):
    """A missing file and a JSON without 'tasks' raise errors that name the file and the cause."""
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match=r"baseline results not found: .*nope\.json"):
        load_baselines(missing)
    no_tasks = tmp_path / "bad.json"
    no_tasks.write_text(json.dumps({"results": {}}))
    with pytest.raises(ValueError, match=r"bad\.json have no 'tasks' entry"):
        load_baselines(no_tasks)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.json are not valid JSON"):
        load_baselines(broken)


def test_load_baselines_json_list_is_a_clear_error(tmp_path):
    """A JSON file whose top level is not an object raises the same clear ValueError."""
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="no 'tasks' entry"):
        load_baselines(path)


# ------------------------------------------------------------ distributed merge


def merge_dataset() -> dict[str, torch.Tensor]:
    """A fixed dataset of 4 images per metric (same in every process)."""
    gen = torch.Generator().manual_seed(1234)
    seg_gt = torch.randint(0, 4, (4, 12, 16), generator=gen)
    seg_gt[torch.rand(4, 12, 16, generator=gen) < 0.2] = 255
    depth_gt = torch.rand(4, 12, 16, generator=gen, dtype=torch.float64).float() * 5
    depth_gt[torch.rand(4, 12, 16, generator=gen) < 0.3] = 0
    edge_gt = (torch.rand(4, 24, 24, generator=gen) < 0.1).to(torch.uint8)
    edge_gt[:, :, :3] = 255
    return {
        "seg_pred": torch.randint(0, 4, (4, 12, 16), generator=gen),
        "seg_gt": seg_gt,
        "depth_pred": torch.rand(4, 12, 16, generator=gen) * 5,
        "depth_gt": depth_gt,
        "edge_pred": torch.rand(4, 24, 24, generator=gen),
        "edge_gt": edge_gt,
    }


def merge_metrics(images: slice) -> dict[str, object]:
    """Confusion, depth and edge metrics updated with ``images`` of the fixed dataset."""
    data = merge_dataset()
    metrics = {"seg": ConfusionMatrixMetric(4), "depth": DepthMetric(), "edge": EdgeMetric(max_dist=0.05)}
    for name, metric in metrics.items():
        metric.update(data[f"{name}_pred"][images], data[f"{name}_gt"][images])
    return metrics


def merge_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    """One rank: update with its half, merge, rank 0 saves states and scores."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metrics = merge_metrics(slice(2 * rank, 2 * rank + 2))
        for metric in metrics.values():
            metric.merge()
        if rank == 0:
            torch.save(
                {name: {"state": m.state, "scores": m.compute()} for name, m in metrics.items()},
                out_file,
            )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def merged(tmp_path_factory) -> dict:
    """States and scores after two gloo ranks each updated with half the data and merged."""
    tmp = tmp_path_factory.mktemp("merge")
    out_file = tmp / "merged.pt"
    mp.spawn(merge_worker, args=(2, str(tmp / "init"), str(out_file)), nprocs=2, join=True)
    return torch.load(out_file)


def test_distributed_merge_is_exact(merged):
    """Merged confusion and edge counts (and depth pixel counts) equal the single-process ones exactly."""
    single = merge_metrics(slice(0, 4))
    for name in ("seg", "edge"):
        for key, value in single[name].state.items():
            assert torch.equal(merged[name]["state"][key], value), (name, key)
        assert merged[name]["scores"] == single[name].compute()
    assert single["seg"].state["confusion"].sum().item() > 0
    assert single["edge"].state["counts"][0, 1].item() > 0
    for key in ("pixels", "images", "delta1"):
        assert torch.equal(merged["depth"]["state"][key], single["depth"].state[key]), key
    for key, value in single["depth"].compute().items():
        assert merged["depth"]["scores"][key] == pytest.approx(value, rel=1e-6)


def test_distributed_merge_depth_is_exact(merged):
    """Merged depth sums equal the single-process ones to 1e-9 relative."""
    single = merge_metrics(slice(0, 4))
    for key, value in single["depth"].state.items():
        torch.testing.assert_close(merged["depth"]["state"][key], value, rtol=1e-9, atol=0)
    for key, value in single["depth"].compute().items():
        assert merged["depth"]["scores"][key] == pytest.approx(value, rel=1e-9)


def test_depth_state_independent_of_batch_split():
    """One update with 4 images and four updates with 1 image each give the same sums to 1e-12 relative."""
    gen = torch.Generator().manual_seed(0)
    pred, gt = torch.rand(4, 64, 64, generator=gen) * 5, torch.rand(4, 64, 64, generator=gen) * 5
    whole, split = DepthMetric(), DepthMetric()
    whole.update(pred, gt)
    for i in range(4):
        split.update(pred[i : i + 1], gt[i : i + 1])
    for key, value in whole.state.items():
        torch.testing.assert_close(split.state[key], value, rtol=1e-12, atol=0)


def test_channel_argmax_equals_torch_argmax_with_ties_and_slices():
    scores = torch.randint(0, 3, (2, 5, 7, 9)).float()  # many ties: the first maximum wins
    for values in (scores, scores[:, 1:], scores.double()):
        assert torch.equal(channel_argmax(values), values.argmax(dim=1))
    with torch.inference_mode():
        assert torch.equal(channel_argmax(scores[:, 2:]), scores[:, 2:].argmax(dim=1))
