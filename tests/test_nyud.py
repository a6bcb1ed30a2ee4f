"""NYUD-v2: both circulating layouts decode to the same values; a wrong folder says what it expected."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vismtl.data.layout import DatasetLayoutError
from vismtl.data.nyud import NYUDDataset, decode_depth, decode_normals, decode_segmentation
from vismtl.tasks import build_tasks

TASKS = build_tasks(
    dict(
        semseg=dict(kind="semseg", num_classes=40),
        depth=dict(kind="depth"),
        normals=dict(kind="normals"),
        edge=dict(kind="edge"),
    )
)
H, W = 10, 14


def make_nyud(root: Path, layout: str) -> dict[str, np.ndarray]:
    """One val frame in the 'npy' or the 'png' layout; returns the decoded truth."""
    rng = np.random.default_rng(1)
    for folder in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "gt_sets" / "val.txt").write_text("000001\n")
    cv2.imwrite(str(root / "images" / "000001.png"), rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    stored = rng.integers(0, 41, (H, W)).astype(np.uint8)
    stored[0, :3] = (0, 1, 40)
    cv2.imwrite(str(root / "segmentation" / "000001.png"), stored)
    depth = rng.uniform(0.5, 9.0, (H, W)).astype(np.float32)
    depth[1, :4] = 0.0
    np.save(root / "depth" / "000001.npy", depth)
    normals = rng.normal(size=(H, W, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[2, :2] = 0.0  # invalid
    edge = (rng.random((H, W)) > 0.8).astype(np.uint8)
    if layout == "npy":
        np.save(root / "normals" / "000001.npy", normals)
        np.save(root / "edge" / "000001.npy", edge.astype(np.float32))
    else:
        rgb = np.round((normals + 1) * 127.5).astype(np.uint8)
        rgb[2, :2] = 127  # mid-gray decodes to length ~0: invalid
        cv2.imwrite(str(root / "normals" / "000001.png"), rgb[..., ::-1])
        cv2.imwrite(str(root / "edge" / "000001.png"), edge * 255)
        normals = rgb.astype(np.float32) * 2 / 255 - 1
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        normals[2, :2] = 0.0
    return dict(stored=stored, depth=depth, normals=normals, edge=edge)


@pytest.mark.parametrize("layout", ["npy", "png"])
def test_both_layouts_decode_exactly(tmp_path, layout):
    truth = make_nyud(tmp_path, layout)
    dataset = NYUDDataset(TASKS, root=str(tmp_path), split="val")
    assert dataset.layout.startswith(layout)
    raw = dataset.load(0)
    assert raw["semseg"][0, :3].tolist() == [255, 0, 39]  # void -> ignore, shift by one
    np.testing.assert_array_equal(raw["semseg"], decode_segmentation(truth["stored"]))
    np.testing.assert_array_equal(raw["depth"], truth["depth"])
    assert (raw["depth"][1, :4] == 0).all()
    np.testing.assert_allclose(raw["normals"], truth["normals"], atol=1e-6)  # png: quantised, then renormalised
    assert (raw["normals"][2, :2] == 0).all()
    valid = np.linalg.norm(raw["normals"], axis=-1) > 0
    np.testing.assert_allclose(np.linalg.norm(raw["normals"][valid], axis=-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(raw["edge"], truth["edge"])
    item = dataset[0]
    assert item["task_mask"].all() and item["normals"].shape == (3, H, W)


def test_folder_in_neither_layout_says_what_it_expected_and_found(tmp_path):
    make_nyud(tmp_path, "npy")
    (tmp_path / "normals" / "000001.npy").rename(tmp_path / "normals" / "000001.png")  # npy edges, png normals
    with pytest.raises(DatasetLayoutError) as error:
        NYUDDataset(TASKS, root=str(tmp_path), split="val")
    message = str(error.value)
    assert "matches neither known layout" in message
    assert "npy (480x640): images/<id>.png|.jpg, segmentation/<id>.png, depth/<id>.npy, normals/<id>.npy" in message
    assert (
        "Found: images/000001.png, segmentation/000001.png, depth/000001.npy, normals/000001.png, edge/000001.npy"
        in message
    )


def test_missing_frame_is_named(tmp_path):
    make_nyud(tmp_path, "npy")
    (tmp_path / "gt_sets" / "val.txt").write_text("000001\n000002\n")
    with pytest.raises(DatasetLayoutError, match=r"files are missing, e.g. .*images/000002\.jpg"):
        NYUDDataset(TASKS, root=str(tmp_path), split="val")


def test_real_refinenet_frame_decodes(shared_data):
    """The NYUD frame of ../shared/data: depth in metres (uint16 / 5000), unit normals, (127,127,127) invalid."""
    folder = shared_data / "nyud" / "refinenet_000433"
    depth = decode_depth(cv2.imread(str(folder / "depth_gt_000433.png"), cv2.IMREAD_UNCHANGED), scale=5000)
    valid = depth > 0
    assert 0.30 < (~valid).mean() < 0.38  # about 34 % invalid
    assert 0.3 < depth[valid].min() and depth[valid].max() < 10.0  # an indoor room
    rgb = cv2.imread(str(folder / "norm_gt_000433.png"))[..., ::-1]
    normals = decode_normals(rgb, invalid_rgb=(127, 127, 127))
    length = np.linalg.norm(normals, axis=-1)
    invalid = np.all(rgb == 127, axis=-1)
    assert 0.18 < invalid.mean() < 0.26 and (length[invalid] == 0).all()
    np.testing.assert_allclose(length[~invalid], 1.0, atol=1e-5)
    raw_length = np.linalg.norm(rgb[~invalid].astype(np.float32) * 2 / 255 - 1, axis=-1)
    assert np.abs(raw_length - 1).max() < 0.1  # stored unit vectors, up to quantisation
    labels = cv2.imread(str(folder / "segm_gt_000433.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(labels)) <= set(range(40)) | {255}


def test_a_missing_root_is_named_with_how_to_place_it(tmp_path):
    with pytest.raises(DatasetLayoutError, match=rf"^NYUD-v2 not found: {tmp_path}/none is not a folder; link"):
        NYUDDataset(TASKS, root=str(tmp_path / "none"), split="val")


def test_the_13_class_copy_is_named(tmp_path):
    (tmp_path / "val" / "image").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="looks like the 288x384, 13-class NYUD-v2 copy"):
        NYUDDataset(TASKS, root=str(tmp_path), split="val")
