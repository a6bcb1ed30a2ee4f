"""PASCAL-Context: derived labels, exact decoding of every task, resumable preparation, clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from vismtl.data.layout import DatasetLayoutError
from vismtl.data.pascal_context import (
    PascalContextDataset,
    edges_from_label_map,
    human_parts_from_mat,
    normals_mask_from_label_map,
)
from vismtl.data.pascal_prepare import prepare_pascal_context
from vismtl.tasks import build_tasks

TASKS = build_tasks(
    dict(
        semseg=dict(kind="semseg", num_classes=21),
        parts=dict(kind="parts", num_classes=7),
        saliency=dict(kind="saliency"),
        normals=dict(kind="normals"),
        edge=dict(kind="edge"),
    )
)
H, W = 12, 16
WALL, BOX, SKY = 440, 37, 360  # Context ids: wall and box occur in NYU, sky does not


def write_parts_mat(path: Path, objects: list[tuple[int, np.ndarray, list[tuple[str, np.ndarray]]]]) -> None:
    """A PASCAL-Part ``anno`` struct: objects of (class_ind, mask, [(part_name, mask), ...])."""
    part_dtype = [("part_name", "O"), ("mask", "O")]
    object_dtype = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    rows = []
    for class_ind, mask, parts in objects:
        part_array = np.array([(n, m.astype(np.uint8)) for n, m in parts], dtype=part_dtype) if parts else np.zeros(0)
        rows.append(("person" if class_ind == 15 else "other", class_ind, mask.astype(np.uint8), part_array))
    scipy.io.savemat(str(path), {"anno": {"imname": path.stem, "objects": np.array(rows, dtype=object_dtype)}})


def make_pascal(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """Three images: with a person, without one, and a second person image; returns what was written."""
    rng = np.random.default_rng(0)
    written = {}
    ids = {"train": ["2008_000001", "2008_000002"], "val": ["2008_000003"]}
    for folder in ("JPEGImages", "ImageSets/Context", "semseg/pascal-context", "human_parts", "sal_distill",
                   "normals_distill", "pascal-context/trainval"):  # fmt: skip
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split, split_ids in ids.items():
        (root / "ImageSets" / "Context" / f"{split}.txt").write_text("\n".join(split_ids) + "\n")
    for k, image_id in enumerate(ids["train"] + ids["val"]):
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), image)
        semseg = rng.integers(0, 21, (H, W)).astype(np.uint8)
        semseg[0, 0] = 255
        cv2.imwrite(str(root / "semseg" / "pascal-context" / f"{image_id}.png"), semseg)
        saliency = np.where(rng.random((H, W)) > 0.5, 200, 100).astype(np.uint8)
        cv2.imwrite(str(root / "sal_distill" / f"{image_id}.png"), saliency)
        normals_rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "normals_distill" / f"{image_id}.png"), normals_rgb[..., ::-1])
        label_map = np.full((H, W), WALL, np.uint16)
        label_map[:, 8:] = BOX
        label_map[:3, :] = SKY
        scipy.io.savemat(str(root / "pascal-context" / "trainval" / f"{image_id}.mat"), {"LabelMap": label_map})
        person = np.zeros((H, W), bool)
        person[4:12, 2:6] = True
        head, arm = person.copy(), person.copy()
        head[6:] = False
        arm[:8] = False
        if k == 1:  # no person: only another object
            write_parts_mat(root / "human_parts" / f"{image_id}.mat", [(12, person, [])])
        else:
            write_parts_mat(root / "human_parts" / f"{image_id}.mat", [(15, person, [("head", head), ("luarm", arm)])])
        written[image_id] = dict(semseg=semseg, saliency=saliency, normals_rgb=normals_rgb, label_map=label_map)
    return written


@pytest.fixture
def pascal(tmp_path):
    written = make_pascal(tmp_path / "PASCAL_MT")
    report = prepare_pascal_context(tmp_path / "PASCAL_MT", progress=False)
    assert (report.done, report.skipped, report.failed) == (3, 0, {})
    return tmp_path / "PASCAL_MT", written


def test_edges_are_thin_boundaries_of_the_label_map():
    label_map = np.full((10, 12), WALL)
    label_map[:, 6:] = BOX
    edges = edges_from_label_map(label_map)
    assert set(np.unique(edges)) == {0, 1}
    assert (edges.sum(axis=1) <= 1).all() and edges.sum() >= 9  # one pixel per row: thinned
    assert set(np.nonzero(edges)[1]) <= {5, 6}  # at the boundary


def test_normals_mask_keeps_nyu_classes_only():
    label_map = np.array([[WALL, BOX, SKY, 427]])
    assert normals_mask_from_label_map(label_map).tolist() == [[1, 1, 0, 1]]  # tvmonitor is added by hand


def test_human_parts_group_and_overwrite(tmp_path):
    person = np.zeros((4, 4), bool)
    person[:, :2] = True
    head = np.zeros((4, 4), bool)
    head[0, :2] = True
    foot = np.zeros((4, 4), bool)
    foot[3, :2] = True
    neck = head.copy()  # drawn after the head: wins
    write_parts_mat(tmp_path / "p.mat", [(15, person, [("head", head), ("lfoot", foot), ("neck", neck)])])
    expected = np.zeros((4, 4), np.uint8)
    expected[0, :2] = 2  # neck -> torso group
    expected[3, :2] = 6  # lfoot -> lower legs
    np.testing.assert_array_equal(human_parts_from_mat(tmp_path / "p.mat"), expected)


def test_single_object_with_single_part(tmp_path):
    person = np.ones((3, 3), bool)
    write_parts_mat(tmp_path / "p.mat", [(15, person, [("hair", person)])])
    assert (human_parts_from_mat(tmp_path / "p.mat") == 1).all()


def test_dataset_decodes_every_task_exactly(pascal):
    root, written = pascal
    dataset = PascalContextDataset(TASKS, root=str(root), split="train")
    assert len(dataset) == 2
    raw = dataset.load(0)
    truth = written["2008_000001"]
    np.testing.assert_array_equal(raw["semseg"], truth["semseg"])
    np.testing.assert_array_equal(raw["saliency"], (truth["saliency"] == 200).astype(np.uint8))
    valid = normals_mask_from_label_map(truth["label_map"]).astype(bool)
    expected_normals = truth["normals_rgb"].astype(np.float32) * 2 / 255 - 1
    np.testing.assert_allclose(raw["normals"][valid], expected_normals[valid], atol=1e-6)
    assert (raw["normals"][~valid] == 0).all() and (~valid).sum() == 3 * W  # the sky rows
    np.testing.assert_array_equal(raw["edge"], edges_from_label_map(truth["label_map"]))
    parts = raw["parts"]
    assert (parts[4:6, 2:6] == 1).all() and (parts[8:12, 2:6] == 3).all() and (parts[6:8, 2:6] == 0).all()
    assert (dataset.load(1)["parts"] == 255).all()  # no person: ignored everywhere
    item = dataset[0]
    assert item["task_mask"].all() and item["image"].shape == (3, H, W)


def test_edges_only_on_the_scored_subset(pascal, tmp_path):
    root, _ = pascal
    subset = tmp_path / "test_new.txt"
    subset.write_text("2008_000002\n")
    dataset = PascalContextDataset(TASKS, root=str(root), split="train", edge_ids=str(subset))
    edge = list(TASKS).index("edge")
    assert not dataset[0]["task_mask"][edge] and dataset[1]["task_mask"][edge]


def test_preparation_resumes_and_redoes_only_what_is_missing(pascal):
    root, _ = pascal
    again = prepare_pascal_context(root, progress=False)
    assert (again.done, again.skipped) == (0, 3)
    (root / "vismtl_cache" / "edge" / "2008_000003.png").unlink()
    (root / "vismtl_cache" / "edge" / ".2008_000002.png.abc.tmp").write_bytes(b"half")  # a crash's leftover
    resumed = prepare_pascal_context(root, progress=False)
    assert (resumed.done, resumed.skipped) == (1, 2)


def test_preparation_records_a_broken_file_and_goes_on(tmp_path):
    root = tmp_path / "PASCAL_MT"
    make_pascal(root)
    (root / "pascal-context" / "trainval" / "2008_000002.mat").write_bytes(b"not a mat file")
    report = prepare_pascal_context(root, progress=False)
    assert report.done == 2 and list(report.failed) == ["2008_000002"]
    assert "2008_000002.mat" in report.failed["2008_000002"]


def test_missing_derived_labels_say_how_to_make_them(tmp_path):
    root = tmp_path / "PASCAL_MT"
    make_pascal(root)
    with pytest.raises(DatasetLayoutError) as error:
        PascalContextDataset(TASKS, root=str(root), split="val")
    message = str(error.value)
    assert "parts: 1 files missing" in message and "python tools/prepare_pascal_context.py" in message


def test_wrong_folder_names_the_missing_list(tmp_path):
    with pytest.raises(
        DatasetLayoutError, match=r"PASCAL-Context train list not found: .*ImageSets/Context/train\.txt"
    ):
        PascalContextDataset(TASKS, root=str(tmp_path), split="train")


def test_a_dataset_folder_that_does_not_exist_says_where_it_was_looked_for(tmp_path, monkeypatch):
    """The configs' data/PASCAL_MT is relative: a run from another folder, or without the link."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetLayoutError) as raised:
        PascalContextDataset(TASKS, root="data/PASCAL_MT", split="train")
    assert str(raised.value) == (
        f"PASCAL-Context not found: data/PASCAL_MT is not a folder (from {tmp_path}); link the dataset there "
        "(ln -s /path/to/it data/PASCAL_MT; layouts in data/README.md) or set the config's data.train.root and "
        "data.val.root"
    )


def test_real_pascal_part_files(shared_data):
    """The PASCAL-Part .mat files of ../shared/data: persons give parts, no person gives all-ignore."""
    folder = shared_data / "pascal_parts"
    with_person = human_parts_from_mat(folder / "2008_000652.mat")
    image = cv2.imread(str(folder / "2008_000652.jpg"))
    assert with_person.shape == image.shape[:2]
    assert set(np.unique(with_person)) == set(range(7))
    assert (with_person > 0).mean() > 0.1
    assert (human_parts_from_mat(folder / "2010_001199.mat") == 255).all()  # chairs and a table only
    for path in folder.glob("*.mat"):
        parts = human_parts_from_mat(path)
        assert set(np.unique(parts)) <= set(range(7)) | {255}
