"""Samples/s of each dataset loader with its training augmentation, with 0, 1 and 2 workers.

    python benchmarks/data_throughput.py [--samples 96] [--repeats 3] [--pascal-root DIR] [--nyud-root DIR]

Without a root, a folder of the real layout is generated in a temporary directory at the
real image sizes (PASCAL 500x375 JPEG with every label file, NYUD 480x640 PNG with .npy
labels), filled with rendered scenes so that JPEG/PNG decoding costs what it costs on
photographs. Each case is checked before timing (a batch has every task labelled and the
training crop size) and timed over ``--samples`` samples, median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import scipy.io

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Row, measure, print_table  # noqa: E402
from vismtl.config import load_config  # noqa: E402
from vismtl.data import build_dataset, build_train_loader  # noqa: E402
from vismtl.data.pascal_prepare import prepare_pascal_context  # noqa: E402
from vismtl.data.scene_renderer import render_scene  # noqa: E402
from vismtl.tasks import build_tasks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _write_parts(path: Path, mask: np.ndarray) -> None:
    head = mask.copy()
    head[mask.shape[0] // 2 :] = 0
    parts = np.array([("head", head), ("torso", mask)], dtype=[("part_name", "O"), ("mask", "O")])
    obj = np.array(
        [("person", 15, mask, parts)], dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    )
    scipy.io.savemat(str(path), {"anno": {"imname": path.stem, "objects": obj}})


def make_pascal(root: Path, count: int) -> Path:
    """A PASCAL_MT folder of ``count`` 500x375 images in the real layout, then prepared."""
    for folder in ("JPEGImages", "ImageSets/Context", "semseg/pascal-context", "human_parts", "sal_distill",
                   "normals_distill", "pascal-context/trainval"):  # fmt: skip
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = [f"2008_{i:06d}" for i in range(count)]
    (root / "ImageSets" / "Context" / "train.txt").write_text("\n".join(ids))
    (root / "ImageSets" / "Context" / "val.txt").write_text(ids[0])
    for i, image_id in enumerate(ids):
        scene = render_scene(0, i, 375, 500)
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), scene["image"][..., ::-1])
        cv2.imwrite(str(root / "semseg" / "pascal-context" / f"{image_id}.png"), scene["semseg"] * 3)
        cv2.imwrite(str(root / "sal_distill" / f"{image_id}.png"), scene["saliency"] * 255)
        normals = np.round((scene["normals"] + 1) * 127.5).astype(np.uint8)
        cv2.imwrite(str(root / "normals_distill" / f"{image_id}.png"), normals[..., ::-1])
        label_map = np.array([440, 158, 37, 72, 397, 284, 427], np.uint16)[scene["semseg"]]
        scipy.io.savemat(str(root / "pascal-context" / "trainval" / f"{image_id}.mat"), {"LabelMap": label_map})
        _write_parts(root / "human_parts" / f"{image_id}.mat", (scene["semseg"] == 6).astype(np.uint8))
    prepare_pascal_context(root, splits=("train",), progress=False)
    return root


def make_nyud(root: Path, count: int) -> Path:
    """A NYUD-v2 folder ('npy' copy) of ``count`` 480x640 frames."""
    for folder in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}" for i in range(count)]
    (root / "gt_sets" / "train.txt").write_text("\n".join(ids))
    for i, image_id in enumerate(ids):
        scene = render_scene(1, i, 480, 640)
        cv2.imwrite(str(root / "images" / f"{image_id}.png"), scene["image"][..., ::-1])
        cv2.imwrite(str(root / "segmentation" / f"{image_id}.png"), scene["semseg"] + 1)
        np.save(root / "depth" / f"{image_id}.npy", scene["depth"])
        np.save(root / "normals" / f"{image_id}.npy", scene["normals"])
        np.save(root / "edge" / f"{image_id}.npy", scene["edge"].astype(np.float32))
    return root


def loader_case(config: str, root: Path | None, samples: int, workers: int, repeats: int, group: str) -> Row:
    cfg = load_config(ROOT / config)
    tasks = build_tasks(cfg.tasks)
    train_cfg = dict(cfg.data.train)
    if root is not None:
        train_cfg["root"] = str(root)
    dataset = build_dataset(train_cfg, tasks, "data.train")
    batch_size = 4
    loader = build_train_loader(dataset, batch_size, workers, seed=0)
    iterator = iter(loader)
    first = next(iterator)
    assert first["task_mask"].all(), "a generated sample lacks a label"
    crop = next(t for t in train_cfg["transforms"] if t["type"] == "Pad")["size"] if root else None
    assert crop is None or tuple(first["image"].shape[-2:]) == tuple(crop), "training crops have the wrong size"

    def run():
        for _ in range(samples // batch_size):
            next(iterator)

    name = f"{Path(config).stem}: {workers} worker{'s' if workers != 1 else ''}"
    return Row(name, measure(run, repeats=repeats, warmup=1), samples, group)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pascal-root", type=Path, help="a real PASCAL_MT folder (prepared)")
    parser.add_argument("--nyud-root", type=Path, help="a real NYUD-v2 folder")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pascal = args.pascal_root or make_pascal(Path(tmp) / "PASCAL_MT", 48)
        nyud = args.nyud_root or make_nyud(Path(tmp) / "NYUD", 48)
        rows = []
        for config, root in (
            ("configs/pascal_context/pascal_hps_vitb.py", pascal),
            ("configs/nyud/nyud_hps_vitb.py", nyud),
            ("configs/quickstart.py", None),
        ):
            for workers in args.workers:
                rows.append(loader_case(config, root, args.samples, workers, args.repeats, config))
        print(f"training augmentation, batch 4, {args.samples} samples per timed run")
        print_table(rows, unit="samples/s")


if __name__ == "__main__":
    main()
