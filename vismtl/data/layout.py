"""Reading dataset files with errors that name the file and say what was expected."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class DatasetLayoutError(ValueError):
    """A dataset folder or file is not what the dataset expects; the message says what is wrong."""


def require_folder(root: Path, dataset: str) -> None:
    """A dataset's root must exist; else one message saying where it was looked for and how to place it."""
    if not root.is_dir():
        where = "" if root.is_absolute() else f" (from {Path.cwd()})"
        raise DatasetLayoutError(
            f"{dataset} not found: {root} is not a folder{where}; link the dataset there (ln -s /path/to/it "
            f"{root}; layouts in data/README.md) or set the config's data.train.root and data.val.root"
        )


def read_id_list(path: Path, what: str = "id list") -> list[str]:
    """Non-empty lines of a text file of sample ids."""
    if not path.is_file():
        raise DatasetLayoutError(f"{what} not found: {path}")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetLayoutError(f"{what} is empty: {path}")
    return ids


def read_png(path: Path) -> np.ndarray:
    """A PNG as stored (palette indices, 8 or 16 bit), ``[H, W]`` or ``[H, W, C]``."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DatasetLayoutError(f"cannot read image {path} (missing, corrupt or not an image)")
    return array


def read_image_rgb(path: Path) -> np.ndarray:
    """An 8-bit colour image as RGB ``[H, W, 3]`` uint8 (alpha dropped, gray expanded)."""
    array = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if array is None:
        raise DatasetLayoutError(f"cannot read image {path} (missing, corrupt or not an image)")
    return np.ascontiguousarray(array[..., ::-1])


def read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetLayoutError(f"cannot read array {path}: {err}") from err
