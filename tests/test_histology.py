"""Histology: sources in every supported format, clear errors, targets and post-processing, partial labels."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import scipy.io
import torch

from vismtl.config import ConfigError
from vismtl.data import build_train_loader
from vismtl.data.histology import (
    CPMSource,
    GeneratedTissueSource,
    InstanceFolderSource,
    MultiSourceDataset,
    PatchFolderSource,
    read_cpm_mask,
)
from vismtl.data.layout import DatasetLayoutError
from vismtl.data.tissue_renderer import render_tissue
from vismtl.models import build_model
from vismtl.tasks import build_tasks
from vismtl.tasks import instance_metrics as im

TASKS = build_tasks(
    dict(
        nuclei=dict(kind="instance", band=3, postprocess="watershed"),
        gland=dict(kind="instance", band=11, postprocess="interior_minus_contour", threshold=0.55, min_size=30),
        lumen=dict(kind="instance", band=3, postprocess="interior_minus_contour", min_size=10, inside="gland"),
        nuclei_type=dict(kind="type", num_classes=7, instances_from="nuclei"),
        tissue=dict(kind="patch_class", num_classes=9),
    )
)


def instance_map(height=20, width=24):
    inst = np.zeros((height, width), np.int32)
    inst[2:8, 3:9], inst[10:16, 12:20] = 1, 2
    types = np.where(inst == 1, 2, np.where(inst == 2, 3, 0)).astype(np.uint8)
    return inst, types


def make_folder(root, fmt: str, keys=("inst_map", "type_map")):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    inst, types = instance_map()
    cv2.imwrite(str(root / "images" / "tile.png"), np.full((20, 24, 3), 200, np.uint8))
    if fmt == "mat":
        scipy.io.savemat(str(root / "labels" / "tile.mat"), {keys[0]: inst, keys[1]: types})
    elif fmt == "npy":
        np.save(root / "labels" / "tile.npy", np.stack([inst, types], axis=-1))
    else:
        cv2.imwrite(str(root / "labels" / "tile.png"), inst.astype(np.uint16))
        (root / "types").mkdir()
        cv2.imwrite(str(root / "types" / "tile.png"), types)
    return inst, types


@pytest.mark.parametrize(
    ("fmt", "keys"), [("mat", ("inst_map", "type_map")), ("mat", ("INST", "TYPE")), ("npy", None), ("png", None)]
)
def test_folder_source_reads_every_format(tmp_path, fmt, keys):
    inst, types = make_folder(tmp_path, fmt, keys or ("inst_map", "type_map"))
    sample = InstanceFolderSource(str(tmp_path), "nuclei").load(0)
    np.testing.assert_array_equal(sample["nuclei_inst"], inst)
    np.testing.assert_array_equal(sample["nuclei_type"], types)
    assert sample["image"].shape == (20, 24, 3)


def test_unknown_layout_is_named(tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(
        DatasetLayoutError, match=r"expected images/<name>.png\|jpg\|tif with labels/.*found: \['pictures'\]"
    ):
        InstanceFolderSource(str(tmp_path))


def test_missing_label_and_wrong_keys_are_named(tmp_path):
    make_folder(tmp_path, "mat", ("foo", "bar"))
    with pytest.raises(
        DatasetLayoutError,
        match=r"tile\.mat has no instance map \(expected key inst_map or INST; found \['foo', 'bar'\]\)",
    ):
        InstanceFolderSource(str(tmp_path)).load(0)
    (tmp_path / "labels" / "tile.mat").unlink()
    with pytest.raises(
        DatasetLayoutError, match=r"no label for tile\.png \(expected labels/tile\.mat, \.npy or \.png\)"
    ):
        InstanceFolderSource(str(tmp_path))


def test_mask_of_another_size_is_named(tmp_path):
    make_folder(tmp_path, "npy")
    cv2.imwrite(str(tmp_path / "images" / "tile.png"), np.zeros((21, 24, 3), np.uint8))
    with pytest.raises(DatasetLayoutError, match=r"labels/tile\.npy: nuclei_inst is 24x20 but its image is 24x21"):
        InstanceFolderSource(str(tmp_path)).load(0)


def test_label_outside_the_configured_classes_is_named(tmp_path):
    make_folder(tmp_path, "npy")
    inst, types = instance_map()
    types[types == 3] = 9  # 7 nuclear classes: 9 is not one of them
    np.save(tmp_path / "labels" / "tile.npy", np.stack([inst, types], axis=-1))
    dataset = MultiSourceDataset(TASKS, sources=[dict(type="folder", root=str(tmp_path))], mpp=0.25)
    with pytest.raises(DatasetLayoutError, match=r"InstanceFolderSource tile: nuclei_type has label 9, outside the 7"):
        dataset[0]


def test_cpm_masks(shared_data, tmp_path):
    source = CPMSource(str(shared_data / "nuclei_cpm"))
    assert len(source) == 15 and source.mpps[0] == 0.5 and source.mpps[-1] == 0.25  # 20x and 40x tiles
    sample = source.load(0)
    assert sample["nuclei_inst"].shape == sample["image"].shape[:2] == (488, 643)
    assert sample["nuclei_inst"].max() > 100  # hundreds of nuclei
    broken = tmp_path / "image01_mask.txt"
    broken.write_text("4 3\n0\n1\n2\n")
    with pytest.raises(DatasetLayoutError, match=r"image01_mask\.txt: header says 4x3 = 12 labels, found 3"):
        read_cpm_mask(broken)


def test_patch_folders(tmp_path):
    for name in ("stroma", "muscle"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "a.png"), np.zeros((8, 8, 3), np.uint8))
    source = PatchFolderSource(str(tmp_path), classes=("background", "muscle", "stroma"))
    assert [source.load(i)["tissue_class"] for i in range(len(source))] == [1, 2]
    (tmp_path / "stromaa").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"folder 'stromaa' is not one of the classes.*did you mean 'stroma'"):
        PatchFolderSource(str(tmp_path), classes=("background", "muscle", "stroma"))


def test_partial_sources_set_the_task_mask_and_resample():
    dataset = MultiSourceDataset(
        TASKS,
        sources=[
            dict(type="generated", length=2, size=(64, 64), seed=1, labels=("nuclei_inst", "nuclei_type"), mpp=0.25),
            dict(type="generated", length=2, size=(64, 64), seed=2, labels=("tissue_class",)),
        ],
        mpp=0.5,
    )
    names = list(TASKS)
    first, last = dataset[0], dataset[3]
    assert first["image"].shape == (3, 32, 32)  # 0.25 um/px resampled to 0.5
    assert first["task_mask"].tolist() == [n in ("nuclei", "nuclei_type") for n in names]
    assert last["task_mask"].tolist() == [n == "tissue" for n in names]
    assert last["tissue"].item() == render_tissue(2, 1, 64, 64)["tissue_class"]
    with pytest.raises(ConfigError, match="unknown label field 'nuclei_instance'"):
        GeneratedTissueSource(labels=("nuclei_instance",))


def test_batches_mix_sources_in_the_configured_proportions():
    dataset = MultiSourceDataset(
        TASKS,
        sources=[
            dict(type="generated", length=50, size=(32, 32), seed=1, labels=("nuclei_inst",)),
            dict(type="generated", length=50, size=(32, 32), seed=2, labels=("tissue_class",)),
        ],
        weights=(3.0, 1.0),
    )
    loader = build_train_loader(dataset, batch_size=8, num_workers=0, seed=0)
    masks = torch.cat([batch["task_mask"] for batch in itertools.islice(iter(loader), 12)])
    share = masks[:, list(TASKS).index("nuclei")].float().mean().item()
    assert 0.6 < share < 0.9  # 0.75 expected over 96 draws


@pytest.mark.parametrize("index", range(4))
def test_perfect_targets_post_process_back_to_the_instances(index):
    """One-hot logits of the training targets give back every nucleus, gland and lumen (PQ >= 0.95)."""
    tile = render_tissue(5, index * 9 + 2, 256, 256)  # normal-epithelium tiles: nuclei, glands and lumina
    for name, field in (("nuclei", "nuclei_inst"), ("gland", "gland_inst"), ("lumen", "lumen_inst")):
        task = TASKS[name]
        target = task.prepare_target(tile[field])[None]
        logits = torch.nn.functional.one_hot(target[:, 0].long(), 3).permute(0, 3, 1, 2).float() * 20
        instances = task.postprocess(logits)[0].numpy()
        stats = im.pq_stats(im.instance_overlap(tile[field], instances))
        assert im.pq_from_stats(stats)["pq"] >= 0.95, name


def test_type_loss_only_inside_objects():
    task = TASKS["nuclei_type"]
    inst, types = instance_map()
    target = task.prepare_target(types)[None]
    logits = torch.randn(1, 7, 20, 24)
    base, has = task.loss(logits, target)
    changed = logits.clone()
    changed[:, :, types == 0] += torch.randn(7, int((types == 0).sum()))  # outside objects only
    assert has.item() and torch.allclose(task.loss(changed, target)[0], base)
    changed[:, 3, 3, 4] += 5.0  # inside nucleus 1
    assert not torch.allclose(task.loss(changed, target)[0], base)


def test_types_by_majority_vote_over_predicted_instances():
    task = TASKS["nuclei_type"]
    inst, _ = instance_map()
    pixel_types = torch.full((1, 20, 24), 1)
    pixel_types[0, 2:5, 3:9] = 4  # 18 of nucleus 1's 36 pixels say 4, 18 say 1: tie -> the smaller type
    pixel_types[0, 10:16, 12:15] = 6  # nucleus 2: 18 pixels 6, 30 pixels 1 -> 1
    voted = task.refine(pixel_types, {"nuclei": torch.from_numpy(inst)[None]})[0]
    assert voted[inst == 1].unique().tolist() == [1] and voted[inst == 2].unique().tolist() == [1]
    assert (voted[inst == 0] == 0).all()


def test_type_metric_by_hand():
    """Counted inside true objects only; background predicted there is an error of the true class."""
    task = build_tasks(
        dict(gland_type=dict(kind="type", num_classes=3, class_names=("background", "gland", "surface epithelium")))
    )["gland_type"]
    target = torch.tensor([[[0, 1, 1, 2, 255], [2, 2, 0, 0, 1]]])
    pred = torch.tensor([[[1, 1, 0, 2, 2], [2, 1, 1, 0, 1]]])
    metric = task.new_metric()
    metric.update(pred[:, :, :4], target[:, :, :4])  # two updates pool: the second adds one correct gland pixel
    metric.update(pred[:, :, 4:], target[:, :, 4:])
    result = metric.compute()
    # inside objects: gland (0,1) ok, (0,2) -> background, (1,4) ok; surface (0,3), (1,0) ok, (1,1) -> gland
    assert result["accuracy"] == pytest.approx(100 * 4 / 6)
    assert result["dice_gland"] == pytest.approx(100 * 2 * 2 / (3 + 3))  # predicted gland inside objects: 3
    assert result["dice_surface_epithelium"] == pytest.approx(100 * 2 * 2 / (2 + 3))
    assert result["mean_dice"] == pytest.approx((result["dice_gland"] + result["dice_surface_epithelium"]) / 2)
    empty = task.new_metric()
    empty.update(pred, torch.zeros_like(target))
    assert np.isnan(empty.compute()["mean_dice"]) and np.isnan(empty.compute()["accuracy"])


def test_unlabelled_decoders_run_without_gradients():
    model = build_model(dict(backbone=dict(name="test_resnet"), decoder=dict(type="cerberus", max_width=16)), TASKS)
    outputs = model(torch.zeros(2, 3, 64, 64), grad_tasks=["nuclei", "tissue"])
    assert outputs["tissue"].shape == (2, 9) and outputs["gland"].shape == (2, 3, 64, 64)
    assert outputs["nuclei"].requires_grad and not outputs["gland"].requires_grad
    sum(o.float().mean() for o in outputs.values()).backward()
    assert all(p.grad is None for p in model.decoder.decoders["gland"].parameters())
    assert all(p.grad is not None for p in model.decoder.decoders["nuclei"].parameters())


def test_cerberus_encoder_matches_the_paper_layout():
    from vismtl.config import load_config

    cfg = load_config("configs/_base_/models/cerberus_resnet34.py")
    model = build_model(cfg.model, TASKS)
    assert model.backbone.channels == [64, 64, 128, 256, 512] and model.backbone.reductions == [1, 2, 4, 8, 16]
    outputs = model(torch.zeros(1, 3, 144, 144))
    assert outputs["nuclei"].shape == (1, 3, 144, 144) and outputs["tissue"].shape == (1, 9)
