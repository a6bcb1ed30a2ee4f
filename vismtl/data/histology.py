"""Histology sources, each labelling some tasks, combined into one multi-source dataset.

A *source* yields raw samples: an RGB image, the label maps it has (``nuclei_inst``,
``nuclei_type``, ``gland_inst``, ``gland_type``, ``lumen_inst``) and/or a ``tissue_class``,
and its resolution in microns per pixel. Fields a source lacks are unlabelled: the
sample's ``task_mask`` says so and its losses are masked out. Sources:

- :class:`InstanceFolderSource`: ``images/<name>.(png|jpg|tif)`` with labels in
  ``labels/<name>.mat`` (keys ``inst_map``/``type_map`` or ``INST``/``TYPE``),
  ``labels/<name>.npy`` ([H, W] instances or [H, W, 2] instances and types) or
  ``labels/<name>.png`` (instances, 8 or 16 bit) with optional ``types/<name>.png``;
- :class:`CPMSource`: the MICCAI 2015 CPM layout, ``imageXX.png`` with ``imageXX_mask.txt``
  (``width height``, then one label per pixel, row-major) and per-image magnifications read
  from ``README_training.txt``;
- :class:`PatchFolderSource`: tissue patches in one folder per class;
- :class:`GeneratedTissueSource`: generated H&E-like tiles (``vismtl.data.tissue_renderer``),
  optionally dropping some fields to imitate partially labelled sources.

:class:`MultiSourceDataset` resamples every sample to the model's microns per pixel and
exposes ``source_sizes`` and ``source_weights`` so that the training sampler mixes sources
within every batch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.io

from vismtl.config import ConfigError, call_with_config, suggest
from vismtl.data.base import MultiTaskDataset
from vismtl.data.layout import DatasetLayoutError, read_image_rgb, read_npy, read_png
from vismtl.tasks import Task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MAP_FIELDS = ("nuclei_inst", "nuclei_type", "gland_inst", "gland_type", "lumen_inst")


class InstanceFolderSource:
    """Images with instance (and optionally type) maps of one structure (nuclei, glands or lumina).

    Args:
        root: the folder (``images/``, ``labels/``, optional ``types/``).
        structure: ``"nuclei"``, ``"gland"`` or ``"lumen"``: which fields the maps fill.
        mpp: microns per pixel of the images.
    """

    def __init__(self, root: str, structure: str = "nuclei", mpp: float = 0.25) -> None:
        self.root, self.structure, self.mpp = Path(root), structure, mpp
        images = self.root / "images"
        self.images = (
            sorted(p for p in images.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if images.is_dir() else []
        )
        if not self.images:
            found = (
                sorted(p.name for p in self.root.glob("*"))[:8] if self.root.is_dir() else "the folder does not exist"
            )
            raise DatasetLayoutError(
                f"histology source {self.root}: expected images/<name>.png|jpg|tif with labels/<name>.mat|npy|png; "
                f"found: {found}"
            )
        self.labels = [self._label_path(image) for image in self.images]

    def _label_path(self, image: Path) -> Path:
        for suffix in (".mat", ".npy", ".png"):
            path = self.root / "labels" / f"{image.stem}{suffix}"
            if path.is_file():
                return path
        raise DatasetLayoutError(
            f"histology source {self.root}: no label for {image.name} (expected labels/{image.stem}.mat, .npy or .png)"
        )

    def __len__(self) -> int:
        return len(self.images)

    def name(self, index: int) -> str:
        return self.images[index].stem

    def load(self, index: int) -> dict[str, Any]:
        path = self.labels[index]
        instances, types = _read_instance_file(path, self.root / "types" / f"{path.stem}.png")
        sample = {"image": read_image_rgb(self.images[index]), f"{self.structure}_inst": instances}
        if types is not None and self.structure != "lumen":
            sample[f"{self.structure}_type"] = types
        _check_sizes(sample, path)
        return sample


def _read_instance_file(path: Path, type_png: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Instance map (and type map if present) from a .mat, .npy or .png label file."""
    if path.suffix == ".mat":
        try:
            mat = scipy.io.loadmat(str(path))
        except (OSError, ValueError, scipy.io.matlab.MatReadError) as err:
            raise DatasetLayoutError(f"cannot read {path}: {err}") from err
        inst_key = next((k for k in ("inst_map", "INST") if k in mat), None)
        if inst_key is None:
            keys = [k for k in mat if not k.startswith("__")]
            raise DatasetLayoutError(f"{path} has no instance map (expected key inst_map or INST; found {keys})")
        type_key = next((k for k in ("type_map", "TYPE") if k in mat), None)
        return mat[inst_key].astype(np.int32), mat[type_key].astype(np.uint8) if type_key else None
    if path.suffix == ".npy":
        array = read_npy(path)
        if array.ndim == 3 and array.shape[-1] == 2:
            return array[..., 0].astype(np.int32), array[..., 1].astype(np.uint8)
        if array.ndim != 2:
            raise DatasetLayoutError(
                f"{path}: expected [H, W] instances or [H, W, 2] instances and types, got {array.shape}"
            )
        return array.astype(np.int32), None
    instances = read_png(path)
    if instances.ndim != 2:
        raise DatasetLayoutError(f"{path}: an instance PNG must have one channel, got shape {instances.shape}")
    types = read_png(type_png).astype(np.uint8) if type_png.is_file() else None
    return instances.astype(np.int32), types


def _check_sizes(sample: Mapping[str, Any], label_path: Path) -> None:
    height, width = sample["image"].shape[:2]
    for key, value in sample.items():
        if key != "image" and isinstance(value, np.ndarray) and value.shape[:2] != (height, width):
            raise DatasetLayoutError(
                f"{label_path}: {key} is {value.shape[1]}x{value.shape[0]} but its image is {width}x{height}"
            )


def read_cpm_mask(path: Path) -> np.ndarray:
    """A CPM ``_mask.txt``: first line ``width height``, then one integer label per pixel (row-major)."""
    try:
        with path.open() as handle:
            width, height = (int(v) for v in handle.readline().split()[:2])
            labels = np.loadtxt(handle, dtype=np.int32, ndmin=1)
    except (OSError, ValueError) as err:
        raise DatasetLayoutError(f"cannot read CPM mask {path}: {err}") from err
    if labels.size != width * height:
        raise DatasetLayoutError(f"{path}: header says {width}x{height} = {width * height} labels, found {labels.size}")
    return labels.reshape(height, width)


class CPMSource:
    """MICCAI 2015 CPM nuclei: ``imageXX.png`` + ``imageXX_mask.txt``, magnification per image.

    Args:
        root: the folder.
        names: the image stems to use (e.g. a training subset); default all.
        mpp_at_40x: microns per pixel at 40x (20x images get twice that).
        mask_files: ``{image stem: mask file name}`` where a copy pairs them differently
            (default ``<stem>_mask.txt``).
    """

    def __init__(
        self,
        root: str,
        names: Sequence[str] | None = None,
        mpp_at_40x: float = 0.25,
        mask_files: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.mask_files = dict(mask_files or {})
        available = sorted(p.stem for p in self.root.glob("image*.png") if self._mask_path(p.stem).is_file())
        if not available:
            raise DatasetLayoutError(f"CPM source {self.root}: expected imageXX.png with imageXX_mask.txt, found none")
        missing = [n for n in (names or []) if n not in available]
        if missing:
            raise DatasetLayoutError(f"CPM source {self.root}: no image/mask pair for {missing}")
        self.names = list(names or available)
        magnifications = self._magnifications()
        self.mpps = [mpp_at_40x * 40 / magnifications.get(name, 40) for name in self.names]

    def _magnifications(self) -> dict[str, float]:
        """``{image stem: objective power}`` from the table in README_training.txt (40x if absent)."""
        readme = self.root / "README_training.txt"
        if not readme.is_file():
            return {}
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"(image\d+)\.png\s+(\d+)x", readme.read_text())}

    def __len__(self) -> int:
        return len(self.names)

    def name(self, index: int) -> str:
        return self.names[index]

    @property
    def mpp(self) -> list[float]:
        return self.mpps

    def _mask_path(self, name: str) -> Path:
        return self.root / self.mask_files.get(name, f"{name}_mask.txt")

    def load(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        mask = self._mask_path(name)
        sample = {"image": read_image_rgb(self.root / f"{name}.png"), "nuclei_inst": read_cpm_mask(mask)}
        _check_sizes(sample, mask)
        return sample


class PatchFolderSource:
    """Tissue patches in one sub-folder per class: ``ROOT/<class name>/<patch>.png|jpg``.

    Args:
        root: the folder.
        classes: the class names in the order of the patch-class task's outputs.
        mpp: microns per pixel of the patches.
    """

    def __init__(self, root: str, classes: Sequence[str], mpp: float = 0.5) -> None:
        self.root, self.mpp = Path(root), mpp
        folders = {p.name for p in self.root.iterdir() if p.is_dir()} if self.root.is_dir() else set()
        unknown = sorted(folders - set(classes))
        if unknown:
            raise DatasetLayoutError(
                f"patch source {self.root}: folder '{unknown[0]}' is not one of the classes {list(classes)}"
                f"{suggest(unknown[0], classes)}"
            )
        self.items = [
            (path, label)
            for label, name in enumerate(classes)
            for path in sorted((self.root / name).glob("*"))
            if path.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not self.items:
            raise DatasetLayoutError(f"patch source {self.root}: no images in class folders {list(classes)}")

    def __len__(self) -> int:
        return len(self.items)

    def name(self, index: int) -> str:
        return f"{self.items[index][0].parent.name}/{self.items[index][0].stem}"

    def load(self, index: int) -> dict[str, Any]:
        path, label = self.items[index]
        return {"image": read_image_rgb(path), "tissue_class": label}


class GeneratedTissueSource:
    """Generated H&E-like tiles; ``labels`` keeps only some fields (a partially labelled source).

    Args:
        length: number of tiles.
        size: (height, width).
        seed: content seed.
        labels: the fields this source provides (default all).
        mpp: microns per pixel the tiles stand for.
    """

    def __init__(
        self,
        length: int = 1000,
        size: Sequence[int] = (256, 256),
        seed: int = 0,
        labels: Sequence[str] | None = None,
        mpp: float = 0.5,
    ) -> None:
        self.length, self.size, self.seed, self.mpp = length, (int(size[0]), int(size[1])), seed, mpp
        known = (*MAP_FIELDS, "tissue_class")
        for field in labels or ():
            if field not in known:
                raise ConfigError(f"unknown label field '{field}'{suggest(field, known)}; known: {', '.join(known)}")
        self.labels = tuple(labels) if labels is not None else known

    def __len__(self) -> int:
        return self.length

    def name(self, index: int) -> str:
        return f"tissue{self.seed}_{index:06d}"

    def load(self, index: int) -> dict[str, Any]:
        from vismtl.data.tissue_renderer import render_tissue

        tile = render_tissue(self.seed, index, *self.size)
        return {"image": tile["image"], **{k: tile[k] for k in self.labels}}


SOURCES = {
    "folder": InstanceFolderSource,
    "cpm": CPMSource,
    "patches": PatchFolderSource,
    "generated": GeneratedTissueSource,
}


class MultiSourceDataset(MultiTaskDataset):
    """Several histology sources as one dataset, resampled to ``mpp``.

    Args:
        sources: ``[dict(type='folder' | 'cpm' | 'patches' | 'generated', **options), ...]``.
        weights: sampling weight of each source in training batches (default: by size).
        mpp: the model's microns per pixel; every sample is resized from its source's.
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        sources: Sequence[Mapping[str, Any]],
        weights: Sequence[float] | None = None,
        mpp: float = 0.5,
        transforms: Sequence[Mapping[str, Any]] = (),
        seed: int = 0,
    ) -> None:
        super().__init__(tasks, transforms, seed)
        self.sources = [self._build_source(spec, i) for i, spec in enumerate(sources)]
        self.source_sizes = [len(s) for s in self.sources]
        if weights is not None and len(weights) != len(self.sources):
            raise ConfigError(f"{len(weights)} source weights for {len(self.sources)} sources")
        self.source_weights = list(weights) if weights is not None else [float(n) for n in self.source_sizes]
        self.offsets = np.cumsum([0, *self.source_sizes])
        self.mpp = mpp
        self._check_type_classes = {t.source: t.num_outputs for t in self.tasks.values() if t.kind == "type"}

    @staticmethod
    def _build_source(spec: Mapping[str, Any], index: int):
        options = dict(spec)
        kind = options.pop("type", None)
        if kind not in SOURCES:
            raise ConfigError(f"unknown source type '{kind}' in sources[{index}]{suggest(str(kind), SOURCES)}")
        return call_with_config(SOURCES[kind], options, f"sources[{index}] ({kind})")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (source, index within the source)."""
        source = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return source, index - int(self.offsets[source])

    def name(self, index: int) -> str:
        source, local = self.locate(index)
        return self.sources[source].name(local)

    def load(self, index: int) -> dict[str, Any]:
        source_index, local = self.locate(index)
        source = self.sources[source_index]
        sample = source.load(local)
        mpp = source.mpp[local] if isinstance(source.mpp, list) else source.mpp
        self._check_labels(sample, f"{type(source).__name__} {source.name(local)}")
        return resample(sample, mpp / self.mpp)

    def _check_labels(self, sample: Mapping[str, Any], where: str) -> None:
        for field, classes in self._check_type_classes.items():
            if field in sample and sample[field].max(initial=0) >= classes:
                raise DatasetLayoutError(
                    f"{where}: {field} has label {int(sample[field].max())}, outside the {classes} configured classes"
                )


def resample(sample: Mapping[str, Any], scale: float) -> dict[str, Any]:
    """Resize a sample by ``scale`` (source mpp / model mpp): images area/linear, label maps nearest."""
    if abs(scale - 1.0) < 1e-3:
        return dict(sample)
    height, width = sample["image"].shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    out = {}
    for key, value in sample.items():
        if not isinstance(value, np.ndarray):
            out[key] = value
        elif key == "image":
            out[key] = cv2.resize(value, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        else:
            out[key] = cv2.resize(value, size, interpolation=cv2.INTER_NEAREST)
    return out
