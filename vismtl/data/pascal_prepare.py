"""Derive PASCAL-Context's costly labels once: edges, human-parts maps, normals masks.

For every id of the train and val lists it writes ``CACHE/edge/<id>.png``,
``CACHE/human_parts/<id>.png`` and ``CACHE/normals_mask/<id>.png`` (uint8 PNG). Each file
is written to a temporary name and renamed, so an interrupted run leaves only complete
files, and a rerun skips the ids whose three files exist (resumable).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vismtl.data.layout import DatasetLayoutError, read_id_list
from vismtl.data.pascal_context import (
    CACHE_DIR,
    CACHED,
    edges_from_label_map,
    human_parts_from_mat,
    load_label_map,
    normals_mask_from_label_map,
)
from vismtl.io import write_png_gray
from vismtl.progress import progress_bar


@dataclass(frozen=True)
class PrepareReport:
    done: int  # ids derived in this run
    skipped: int  # ids already complete
    failed: dict[str, str]  # id -> error message


def _outputs(cache: Path, image_id: str) -> list[Path]:
    return [cache / kind / f"{image_id}.png" for kind in CACHED]


def derive_one(root: Path, cache: Path, image_id: str) -> None:
    """Write the three derived labels of one image (atomically, each on its own)."""
    label_map = load_label_map(root / "pascal-context" / "trainval" / f"{image_id}.mat")
    parts = human_parts_from_mat(root / "human_parts" / f"{image_id}.mat", shape=label_map.shape)
    edge_path, parts_out, normals_out = _outputs(cache, image_id)
    write_png_gray(edge_path, edges_from_label_map(label_map))
    write_png_gray(parts_out, parts)
    write_png_gray(normals_out, normals_mask_from_label_map(label_map))


def _derive_safe(args: tuple[Path, Path, str]) -> tuple[str, str | None]:
    root, cache, image_id = args
    try:
        derive_one(root, cache, image_id)
    except DatasetLayoutError as err:
        return image_id, str(err)
    return image_id, None


def prepare_pascal_context(
    root: str | Path,
    cache: str | Path | None = None,
    splits: Iterable[str] = ("train", "val"),
    workers: int = 1,
    progress: bool = True,
) -> PrepareReport:
    """Derive the cached labels of every image in ``splits``; returns what was done."""
    root = Path(root)
    cache = Path(cache) if cache else root / CACHE_DIR
    ids: list[str] = []
    for split in splits:
        ids += read_id_list(root / "ImageSets" / "Context" / f"{split}.txt", what=f"PASCAL-Context {split} list")
    ids = list(dict.fromkeys(ids))
    todo = [i for i in ids if not all(p.is_file() for p in _outputs(cache, i))]
    failed: dict[str, str] = {}
    jobs = [(root, cache, image_id) for image_id in todo]
    bar = progress_bar(total=len(todo), desc="deriving labels", disable=not progress)
    with bar, contextlib.ExitStack() as stack:  # the bar closes after the pool, before any error's message
        results = map(_derive_safe, jobs)
        if workers > 1:
            results = stack.enter_context(ProcessPoolExecutor(workers)).map(_derive_safe, jobs, chunksize=8)
        for image_id, error in results:
            if error:
                failed[image_id] = error
            bar.update(1)
    return PrepareReport(done=len(todo) - len(failed), skipped=len(ids) - len(todo), failed=failed)
