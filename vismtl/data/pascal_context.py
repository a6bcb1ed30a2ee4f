"""PASCAL-Context multi-task ("PASCAL_MT"): 4998 train / 5105 val images, five tasks.

Expected folder (the standard release, unchanged)::

    ROOT/JPEGImages/<id>.jpg
    ROOT/ImageSets/Context/{train,val}.txt
    ROOT/semseg/pascal-context/<id>.png     (or semseg/VOC12/<id>.png): 21 classes, 255 ignore
    ROOT/human_parts/<id>.mat               PASCAL-Part struct ``anno``
    ROOT/sal_distill/<id>.png               saliency = value / 255 > 0.5
    ROOT/normals_distill/<id>.png           n = 2 v / 255 - 1
    ROOT/pascal-context/trainval/<id>.mat   the 459-class ``LabelMap`` (edges, normals mask)

The costly labels (human parts from the ``.mat`` structs, edges of the label map, and the
mask of pixels whose Context class also occurs in NYU, where the distilled normals are
valid) are derived once by ``tools/prepare_pascal_context.py`` into ``ROOT/vismtl_cache/``;
the dataset then only reads PNG files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.io
from skimage.morphology import thin

from vismtl.data.base import MultiTaskDataset
from vismtl.data.layout import DatasetLayoutError, read_id_list, read_image_rgb, read_png, require_folder
from vismtl.tasks import IGNORE_INDEX, Task

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
PART_CLASSES = ("background", "head", "torso", "upper arms", "lower arms", "upper legs", "lower legs")
PERSON_CLASS = 15  # in PASCAL-Part's class_ind

# The PASCAL-Part person parts grouped into the 6 parts of the multi-task benchmark.
PERSON_PART_GROUPS = {
    **dict.fromkeys(("hair", "head", "lear", "rear", "lebrow", "rebrow", "leye", "reye", "mouth", "nose"), 1),
    **dict.fromkeys(("torso", "neck"), 2),
    **dict.fromkeys(("luarm", "ruarm"), 3),
    **dict.fromkeys(("llarm", "rlarm", "lhand", "rhand"), 4),
    **dict.fromkeys(("luleg", "ruleg"), 5),
    **dict.fromkeys(("llleg", "rlleg", "lfoot", "rfoot"), 6),
}

# Ids (in the 459-class LabelMap) of the Context classes that also occur among the NYU-v2
# classes, plus 'tvmonitor' (427): the distilled normals are valid only on these.
NORMALS_VALID_CLASSES = np.array([
    3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23, 29, 30, 33, 34, 36, 37, 38, 39, 41, 43, 46, 49, 50, 51, 53, 55, 56,
    59, 61, 62, 65, 66, 68, 69, 72, 73, 78, 83, 84, 85, 87, 88, 95, 96, 101, 104, 105, 107, 111, 113, 115, 122, 124,
    135, 141, 142, 143, 146, 150, 154, 157, 158, 159, 165, 172, 174, 181, 183, 184, 191, 193, 195, 197, 199, 202,
    213, 215, 216, 219, 220, 223, 225, 228, 230, 232, 233, 238, 239, 242, 243, 246, 250, 251, 252, 255, 260, 261,
    263, 269, 272, 273, 275, 281, 283, 284, 285, 286, 287, 288, 290, 291, 292, 293, 295, 304, 307, 309, 310, 314,
    315, 319, 323, 329, 330, 331, 336, 342, 345, 349, 350, 351, 352, 355, 357, 368, 370, 371, 374, 379, 380, 383,
    384, 397, 401, 403, 405, 407, 408, 411, 412, 413, 414, 417, 419, 421, 423, 427, 429, 430, 432, 440, 441, 442,
    443, 444, 446, 454, 457,
])  # fmt: skip

CACHE_DIR = "vismtl_cache"
MAT_ERRORS = (OSError, ValueError, KeyError, scipy.io.matlab.MatReadError)
CACHED = ("edge", "human_parts", "normals_mask")  # sub-folders of the cache, one PNG per id


# -- label derivation (run once by the preparation tool) -----------------------------------


def _as_list(value: Any) -> list:
    """scipy's squeezed struct arrays: a single element comes back bare."""
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def human_parts_from_mat(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A PASCAL-Part ``.mat`` -> uint8 ``[H, W]`` of 6 person parts (0 background).

    Every person of the image contributes its parts; an image without a labelled person
    is all 255 (ignored), so that part metrics are over images with persons only. ``shape``
    is the image size, needed when the file has no object to read it from.
    """
    if not path.is_file():
        raise DatasetLayoutError(f"human parts annotation not found: {path}")
    try:
        anno = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)["anno"]
        return _parts_map(anno, shape)
    except (*MAT_ERRORS, AttributeError, IndexError) as err:  # IndexError: a part mask of another size
        raise DatasetLayoutError(f"{path}: not a PASCAL-Part annotation ({type(err).__name__}: {err})") from err


def _parts_map(anno: Any, shape: tuple[int, int] | None) -> np.ndarray:
    objects = [] if isinstance(anno.objects, np.ndarray) and anno.objects.size == 0 else _as_list(anno.objects)
    target = None
    for obj in objects:
        if int(obj.class_ind) != PERSON_CLASS:
            continue
        parts = [] if isinstance(obj.parts, np.ndarray) and obj.parts.size == 0 else _as_list(obj.parts)
        if not parts:
            continue
        if target is None:
            target = np.zeros(np.asarray(obj.mask).shape, np.uint8)
        for part in parts:
            target[np.asarray(part.mask, bool)] = PERSON_PART_GROUPS[str(part.part_name)]
    if target is None:
        if shape is None:
            if not objects:
                raise ValueError("no objects, so no image size: pass shape")
            shape = np.asarray(objects[0].mask).shape
        return np.full(shape, IGNORE_INDEX, np.uint8)
    return target


def load_label_map(path: Path) -> np.ndarray:
    """The 459-class ``LabelMap`` of ``pascal-context/trainval/<id>.mat``."""
    if not path.is_file():
        raise DatasetLayoutError(f"PASCAL-Context label map not found: {path}")
    try:
        return np.asarray(scipy.io.loadmat(str(path))["LabelMap"])
    except MAT_ERRORS as err:
        raise DatasetLayoutError(f"{path}: no PASCAL-Context LabelMap ({err})") from err


def edges_from_label_map(label_map: np.ndarray) -> np.ndarray:
    """Boundaries of the label map, thinned to one pixel: uint8 ``[H, W]`` in {0, 1}."""
    laplacian = cv2.Laplacian(label_map.astype(np.float64), cv2.CV_64F)
    return thin(np.abs(laplacian) > 0).astype(np.uint8)


def normals_mask_from_label_map(label_map: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]``: 1 where the Context class also occurs in NYU (normals valid)."""
    return np.isin(label_map, NORMALS_VALID_CLASSES).astype(np.uint8)


# -- the dataset ---------------------------------------------------------------------------


class PascalContextDataset(MultiTaskDataset):
    """PASCAL-Context for the tasks semseg, parts, saliency, normals, edge (any subset).

    Task sources (the ``source`` of each task, default its name): ``semseg``, ``parts``,
    ``saliency``, ``normals``, ``edge``.

    Args:
        root: the PASCAL_MT folder.
        split: ``"train"`` or ``"val"`` (a list file in ``ImageSets/Context``).
        edge_ids: a file of ids whose edges are scored (``test_new.txt`` for the benchmark's
            odsF); other images carry no edge label. None: every image.
        ids_file: read the ids from this file instead of the split list.
        cache: where the prepared labels are (default ``ROOT/vismtl_cache``).
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        root: str,
        split: str = "train",
        transforms: Sequence[Mapping[str, Any]] = (),
        edge_ids: str | None = None,
        ids_file: str | None = None,
        cache: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(tasks, transforms, seed)
        self.root = Path(root)
        require_folder(self.root, "PASCAL-Context")
        self.cache = Path(cache) if cache else self.root / CACHE_DIR
        ids_path = Path(ids_file) if ids_file else self.root / "ImageSets" / "Context" / f"{split}.txt"
        self.ids = read_id_list(ids_path, what=f"PASCAL-Context {split} list")
        self.edge_ids = set(read_id_list(Path(edge_ids), what="edge evaluation ids")) if edge_ids else None
        self.sources = {task.source for task in self.tasks.values()}
        self._check_layout()

    def _paths(self, image_id: str) -> dict[str, Path]:
        semseg = self.root / "semseg" / "pascal-context" / f"{image_id}.png"
        if not semseg.exists():
            semseg = self.root / "semseg" / "VOC12" / f"{image_id}.png"
        return {
            "image": self.root / "JPEGImages" / f"{image_id}.jpg",
            "semseg": semseg,
            "saliency": self.root / "sal_distill" / f"{image_id}.png",
            "normals": self.root / "normals_distill" / f"{image_id}.png",
            "normals_mask": self.cache / "normals_mask" / f"{image_id}.png",
            "parts": self.cache / "human_parts" / f"{image_id}.png",
            "edge": self.cache / "edge" / f"{image_id}.png",
        }

    def _needed(self) -> list[str]:
        keys = ["image", *(s for s in ("semseg", "saliency", "normals", "parts", "edge") if s in self.sources)]
        return keys + (["normals_mask"] if "normals" in self.sources else [])

    def _check_layout(self) -> None:
        """Every file this dataset will read exists; otherwise one message says what is missing."""
        missing: dict[str, list[Path]] = {}
        for image_id in self.ids:
            paths = self._paths(image_id)
            for key in self._needed():
                if not paths[key].is_file():
                    missing.setdefault(key, []).append(paths[key])
        if not missing:
            return
        lines = [f"PASCAL-Context folder {self.root} is incomplete for the {len(self.ids)} listed images:"]
        for key, paths in missing.items():
            lines.append(f"  {key}: {len(paths)} files missing, e.g. {paths[0]}")
        if missing.keys() & {"parts", "edge", "normals_mask"}:
            lines.append(f"  derived labels are made once by: python tools/prepare_pascal_context.py {self.root}")
        raise DatasetLayoutError("\n".join(lines))

    def __len__(self) -> int:
        return len(self.ids)

    def name(self, index: int) -> str:
        return self.ids[index]

    def load(self, index: int) -> dict[str, np.ndarray]:
        image_id = self.ids[index]
        paths = self._paths(image_id)
        sample = {"image": read_image_rgb(paths["image"])}
        if "semseg" in self.sources:
            sample["semseg"] = read_png(paths["semseg"])
        if "parts" in self.sources:
            sample["parts"] = read_png(paths["parts"])
        if "saliency" in self.sources:
            sample["saliency"] = (read_png(paths["saliency"]) > 127).astype(np.uint8)
        if "normals" in self.sources:
            normals = read_image_rgb(paths["normals"]).astype(np.float32) * (2.0 / 255.0) - 1.0
            normals[read_png(paths["normals_mask"]) == 0] = 0.0  # zero vectors are invalid
            sample["normals"] = normals
        if "edge" in self.sources and (self.edge_ids is None or image_id in self.edge_ids):
            sample["edge"] = read_png(paths["edge"])
        return sample
