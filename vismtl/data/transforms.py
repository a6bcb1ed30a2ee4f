"""Augmentation that keeps every target of a multi-task sample consistent.

A pipeline is a list of steps from the config, each ``dict(type=..., **options)``:

- any albumentations transform by its class name (``HorizontalFlip``, ``RandomScale``,
  ``ColorJitter``, ...). Consecutive ones run as one ``albumentations.Compose`` in which
  every label map is a mask target (nearest interpolation); afterwards the parameters
  albumentations applied are read back and carried to the targets whose values depend on
  geometry: a horizontal flip negates the normals' x component, a zoom by s divides depth
  by s, a vertical flip negates the normals' y component. Transforms that move pixels in
  other ways are refused at build time, because depth and normals could not follow them.
- vismtl's own steps that need to know what a map means: :class:`RandomCrop` (with the
  maximum class ratio of the published recipes) and :class:`Pad` (label maps padded with
  the ignore value, depth with 0 = invalid, normals with the zero vector).

Every random choice comes from the sample's seed, so a sample is a pure function of
(dataset seed, index, sample seed) whatever the worker that makes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from vismtl.config import ConfigError, call_with_config, suggest
from vismtl.tasks import IGNORE_INDEX

Sample = dict[str, np.ndarray]

# Albumentations transforms that move pixels and how depth / normals follow them.
GEOMETRIC = ("HorizontalFlip", "VerticalFlip", "RandomScale", "Resize")

# Values used outside the image after padding, per map kind.
PAD_VALUES = {"label": IGNORE_INDEX, "depth": 0.0, "normals": 0.0, "instance": -1}


class RandomCrop:
    """Crop ``size`` = (height, width) at a random position (smaller inputs are kept whole).

    With ``cat_max_ratio`` < 1 the crop is redrawn (up to 10 times) while one class of
    ``label_key`` covers more than that share of the crop's labelled pixels, as in the
    ATRC / InvPT recipe.
    """

    def __init__(
        self,
        size: Sequence[int],
        cat_max_ratio: float = 1.0,
        label_key: str = "semseg",
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.cat_max_ratio = cat_max_ratio
        self.label_key = label_key
        self.ignore_index = ignore_index

    def _draw(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        top = int(rng.integers(0, max(height - self.size[0], 0) + 1))
        left = int(rng.integers(0, max(width - self.size[1], 0) + 1))
        return top, left

    def _balanced(self, labels: np.ndarray) -> bool:
        values, counts = np.unique(labels[labels != self.ignore_index], return_counts=True)
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def __call__(self, sample: Sample, kinds: Mapping[str, str], rng: np.random.Generator) -> Sample:
        height, width = sample["image"].shape[:2]
        h, w = self.size
        top, left = self._draw(height, width, rng)
        labels = sample.get(self.label_key)
        if self.cat_max_ratio < 1.0 and labels is not None:
            for _ in range(10):
                if self._balanced(labels[top : top + h, left : left + w]):
                    break
                top, left = self._draw(height, width, rng)
        return {key: value[top : top + h, left : left + w] for key, value in sample.items()}


class Pad:
    """Pad at the bottom and right to at least ``size`` = (height, width).

    The image is padded with ``image_fill``; label maps with the ignore value, depth with 0
    (invalid) and normals with zero vectors (invalid), so padding is never learnt from.
    """

    def __init__(self, size: Sequence[int], image_fill: float = 0.0) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.image_fill = image_fill

    def __call__(self, sample: Sample, kinds: Mapping[str, str], rng: np.random.Generator) -> Sample:
        height, width = sample["image"].shape[:2]
        bottom, right = max(self.size[0] - height, 0), max(self.size[1] - width, 0)
        if not bottom and not right:
            return sample
        out = {}
        for key, value in sample.items():
            fill = self.image_fill if key == "image" else PAD_VALUES[kinds[key]]
            out[key] = cv2.copyMakeBorder(value, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=(fill,) * 4)
        return out


OWN_STEPS = {"RandomCrop": RandomCrop, "Pad": Pad}


class AlbumentationsGroup:
    """Consecutive albumentations transforms run as one Compose, then geometry is carried over."""

    def __init__(self, transforms: list[A.BasicTransform], keys: Sequence[str]) -> None:
        self.keys = [k for k in keys if k != "image"]
        self.compose = A.Compose(
            transforms,
            additional_targets={key: "mask" for key in self.keys},
            mask_interpolation=cv2.INTER_NEAREST,
            save_applied_params=True,
        )

    def __call__(self, sample: Sample, kinds: Mapping[str, str], rng: np.random.Generator) -> Sample:
        self.compose.set_random_seed(int(rng.integers(2**31)))
        shape_in = sample["image"].shape[:2]
        result = self.compose(**sample)
        out = {key: result[key] for key in sample}
        for name, _params in result["applied_transforms"]:
            if name in ("HorizontalFlip", "VerticalFlip"):
                axis = 0 if name == "HorizontalFlip" else 1
                for key in self.keys:
                    if kinds[key] == "normals":
                        out[key] = out[key].copy()
                        out[key][..., axis] *= -1.0
        zoom = _zoom(shape_in, out["image"].shape[:2])
        if zoom != 1.0:
            for key in self.keys:
                if kinds[key] == "depth":
                    out[key] = out[key] / np.float32(zoom)
        return out


def _zoom(shape_in: tuple[int, int], shape_out: tuple[int, int]) -> float:
    """The magnification of a resize (geometric mean of the two axes)."""
    return float(np.sqrt((shape_out[0] / shape_in[0]) * (shape_out[1] / shape_in[1])))


def _build_albumentation(spec: Mapping[str, Any], where: str) -> A.BasicTransform:
    spec = dict(spec)
    name = spec.pop("type")
    cls = getattr(A, name, None)
    if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
        known = [*OWN_STEPS, *(n for n in dir(A) if n[0].isupper())]
        raise ConfigError(f"unknown transform '{name}' in {where}{suggest(name, known)}")
    if not issubclass(cls, A.ImageOnlyTransform) and name not in GEOMETRIC:
        raise ConfigError(
            f"transform '{name}' in {where} moves pixels in a way vismtl cannot carry to depth and "
            f"normals; use {', '.join(GEOMETRIC)}, RandomCrop or Pad, or any image-only transform"
        )
    return call_with_config(cls, spec, f"{where} ({name})")


class Pipeline:
    """Apply a list of steps to a sample ``{"image": [H, W, 3], key: map, ...}``.

    Args:
        steps: ``[dict(type=..., **options), ...]`` (see the module docstring).
        map_kinds: ``{key: "label" | "depth" | "normals"}`` for every non-image key.
        where: the config path, for error messages.
    """

    def __init__(
        self, steps: Sequence[Mapping[str, Any]], map_kinds: Mapping[str, str], where: str = "transforms"
    ) -> None:
        self.map_kinds = dict(map_kinds)
        keys = ["image", *self.map_kinds]
        self.steps: list[Any] = []
        pending: list[A.BasicTransform] = []
        for index, spec in enumerate(steps):
            if "type" not in spec:
                raise ConfigError(f"{where}[{index}] has no 'type'")
            if spec["type"] in OWN_STEPS:
                if pending:
                    self.steps.append(AlbumentationsGroup(pending, keys))
                    pending = []
                options = {k: v for k, v in spec.items() if k != "type"}
                self.steps.append(call_with_config(OWN_STEPS[spec["type"]], options, f"{where}[{index}]"))
            else:
                pending.append(_build_albumentation(spec, f"{where}[{index}]"))
        if pending:
            self.steps.append(AlbumentationsGroup(pending, keys))

    def __call__(self, sample: Sample, seed: int) -> Sample:
        rng = np.random.default_rng(seed)
        for step in self.steps:
            sample = step(sample, self.map_kinds, rng)
        return sample
