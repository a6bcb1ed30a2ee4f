"""NYUD-v2 multi-task: 795 train / 654 val frames, semseg (40 classes), depth, normals, edges.

Two incompatible copies of the multi-task NYUD-v2 circulate; both are read unchanged and
give the same sample schema::

    ROOT/gt_sets/{train,val}.txt
    ROOT/images/<id>.png|jpg          RGB
    ROOT/segmentation/<id>.png        0..40: 0 = void (-> 255), class c -> c - 1
    ROOT/depth/<id>.npy               metres, 0 = invalid

    "npy" copy (480x640):   ROOT/normals/<id>.npy  float [H, W, 3] in [-1, 1]
                            ROOT/edge/<id>.npy     {0, 1}
    "png" copy (448x576):   ROOT/normals/<id>.png  n = 2 v / 255 - 1
                            ROOT/edge/<id>.png     > 0 is an edge

Normals of zero length (or not finite) are invalid. Channel 0 of the normals is the
image-horizontal component (negated by horizontal flips).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vismtl.data.base import MultiTaskDataset
from vismtl.data.layout import DatasetLayoutError, read_id_list, read_image_rgb, read_npy, read_png, require_folder
from vismtl.tasks import IGNORE_INDEX, Task

NUM_CLASSES = 40

# Field -> accepted file extensions in each copy of the dataset.
LAYOUTS = {
    "npy (480x640)": {"normals": ".npy", "edge": ".npy"},
    "png (448x576)": {"normals": ".png", "edge": ".png"},
}
FIXED = {"segmentation": ".png", "depth": ".npy"}
FIELDS = {"semseg": "segmentation", "depth": "depth", "normals": "normals", "edge": "edge"}


def decode_segmentation(stored: np.ndarray) -> np.ndarray:
    """0..40 as stored -> 40 classes 0..39, void (0) -> 255."""
    labels = stored.astype(np.int16) - 1
    labels[(labels < 0) | (labels >= NUM_CLASSES)] = IGNORE_INDEX
    return labels.astype(np.uint8)


def decode_depth(depth: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Stored depth / scale -> metres float32 (0 = invalid; NaN and negatives become 0)."""
    metres = depth.astype(np.float32) / np.float32(scale)
    metres[~np.isfinite(metres) | (metres < 0)] = 0.0
    return metres


def decode_normals(normals: np.ndarray, invalid_rgb: Sequence[int] | None = None) -> np.ndarray:
    """Float normals, or 8-bit RGB (n = 2 v / 255 - 1) -> unit float32 ``[H, W, 3]``.

    Pixels of zero length, not finite, or (for 8-bit input) equal to ``invalid_rgb`` become
    zero vectors (invalid); the others are renormalised to unit length.
    """
    if normals.dtype == np.uint8:
        invalid = np.all(normals == np.asarray(invalid_rgb), axis=-1) if invalid_rgb is not None else None
        normals = normals.astype(np.float32) * (2.0 / 255.0) - 1.0
    else:
        invalid = None
        normals = np.nan_to_num(normals.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    length = np.linalg.norm(normals, axis=-1, keepdims=True)
    valid = length > 0.5
    if invalid is not None:
        valid &= ~invalid[..., None]
    return np.where(valid, normals / np.maximum(length, 1e-6), 0.0).astype(np.float32)


def decode_edge(edge: np.ndarray) -> np.ndarray:
    return (edge > 0).astype(np.uint8)


class NYUDDataset(MultiTaskDataset):
    """NYUD-v2 for the tasks semseg, depth, normals, edge (any subset).

    Args:
        root: the dataset folder (either copy; see the module docstring).
        split: ``"train"`` or ``"val"`` (``gt_sets/<split>.txt``).
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        root: str,
        split: str = "train",
        transforms: Sequence[Mapping[str, Any]] = (),
        seed: int = 0,
    ) -> None:
        super().__init__(tasks, transforms, seed)
        self.root = Path(root)
        require_folder(self.root, "NYUD-v2")
        if (self.root / split / "image").is_dir() and not (self.root / "gt_sets").is_dir():
            raise DatasetLayoutError(
                f"{self.root} looks like the 288x384, 13-class NYUD-v2 copy ({split}/image/...): a different "
                "benchmark from the 40-class multi-task NYUD-v2 this dataset reads (see data/README.md)"
            )
        self.ids = read_id_list(self.root / "gt_sets" / f"{split}.txt", what=f"NYUD-v2 {split} list")
        self.sources = {task.source for task in self.tasks.values()}
        self.layout, self.extensions = self._detect_layout()

    def _image_path(self, image_id: str) -> Path:
        png = self.root / "images" / f"{image_id}.png"
        return png if png.is_file() else self.root / "images" / f"{image_id}.jpg"

    def _detect_layout(self) -> tuple[str, dict[str, str]]:
        """Which copy the folder is; if neither, one message with what was expected and found."""
        needed = [FIELDS[s] for s in ("semseg", "depth", "normals", "edge") if s in self.sources]
        first = self.ids[0]
        found = {f: {p.suffix for p in (self.root / f).glob(f"{first}.*")} for f in ["images", *needed]}
        for name, extensions in LAYOUTS.items():
            wanted = {**FIXED, **extensions}
            if found["images"] & {".png", ".jpg"} and all(wanted[f] in found[f] for f in needed):
                self._check_files({f: wanted[f] for f in needed})
                return name, wanted
        expected = "; or ".join(
            f"{name}: " + ", ".join(f"{f}/<id>{({**FIXED, **ext}).get(f, '.png|.jpg')}" for f in found)
            for name, ext in LAYOUTS.items()
        )
        seen = ", ".join(f"{f}/{first}{'|'.join(sorted(e)) if e else ' (nothing)'}" for f, e in found.items())
        raise DatasetLayoutError(
            f"NYUD-v2 folder {self.root} matches neither known layout. Expected {expected}. Found: {seen}"
        )

    def _check_files(self, extensions: dict[str, str]) -> None:
        missing = [
            path
            for image_id in self.ids
            for path in [self._image_path(image_id)]
            + [self.root / folder / f"{image_id}{ext}" for folder, ext in extensions.items()]
            if not path.is_file()
        ]
        if missing:
            raise DatasetLayoutError(
                f"NYUD-v2 folder {self.root}: {len(missing)} listed files are missing, e.g. {missing[0]}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def name(self, index: int) -> str:
        return self.ids[index]

    def _read(self, folder: str, image_id: str) -> np.ndarray:
        path = self.root / folder / f"{image_id}{self.extensions[folder]}"
        return read_npy(path) if path.suffix == ".npy" else read_png(path)

    def load(self, index: int) -> dict[str, np.ndarray]:
        image_id = self.ids[index]
        sample = {"image": read_image_rgb(self._image_path(image_id))}
        if "semseg" in self.sources:
            sample["semseg"] = decode_segmentation(self._read("segmentation", image_id))
        if "depth" in self.sources:
            sample["depth"] = decode_depth(self._read("depth", image_id))
        if "normals" in self.sources:
            normals = self._read("normals", image_id)
            sample["normals"] = decode_normals(normals[..., ::-1] if normals.dtype == np.uint8 else normals)
        if "edge" in self.sources:
            sample["edge"] = decode_edge(self._read("edge", image_id))
        return sample
