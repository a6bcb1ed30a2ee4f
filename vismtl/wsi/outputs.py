"""What a slide's run leaves in ``OUT/<slide name>/``, written chunk by chunk.

- ``<task>.zarr``: uint8 (or uint16) raster per dense task on the output grid, chunked like
  the run, written one chunk at a time (never held whole in memory);
- ``<task>.geojson``: the instances of instance tasks as a QuPath-readable FeatureCollection;
- ``tissue_mask.png``, ``thumbnail.png`` (the slide with the predictions overlaid, at the finest
  pyramid level within ``wsi.thumbnail_size``);
- for a patch-class task (a class per tile: tissue types), ``<task>.zarr``, its class per tile on
  a grid of cells the tiles' step apart, and ``<task>_map.png``, those classes over the slide;
- ``summary.json``: counts, areas, tissue-class proportions, timings -- written last, so its
  presence means the slide is complete;
- ``run.json`` (the settings a resume must match), ``journal.jsonl`` and ``.parts/`` (per-chunk
  GeoJSON Features, put together at the end) while the run is in progress;
- ``unreadable.jsonl``, where the slide file has damaged tiles: one line per model tile left white
  because it could not be read (its corner on the output grid, the error).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zarr

from vismtl.io import atomic_open, write_json, write_png, write_png_gray
from vismtl.tasks.visual import PALETTE
from vismtl.wsi.geojson import ChunkPart, merge_parts
from vismtl.wsi.journal import Journal
from vismtl.wsi.pieces import ObjectPiece, read_pieces
from vismtl.wsi.stitch import ChunkResult
from vismtl.wsi.tiling import TileLayout

OWN_FILES = ("run.json", "journal.jsonl", "summary.json", "tissue_mask.png", "thumbnail.png", "unreadable.jsonl")
PART_SUFFIX = ".features"  # a chunk's GeoJSON Features (vismtl.wsi.geojson.ChunkPart)
PIECES_SUFFIX = ".pieces"  # the pieces of its objects that cross its border (vismtl.wsi.pieces)
PARTS_FORMAT = ".parts/format"  # what a partial run's chunks keep: a run of another format is not continued
PIECES_FORMAT = "pieces with type votes"  # since 2026-11-28 ("pieces", their chunk's type: since 2026-11-27)
FORMER_PART_SUFFIX = ".json"  # instance records, before 2026-11-27: a partial run with them is not continued


@dataclass(frozen=True)
class ChunkFiles:
    """Where one chunk's outputs go: ``folder``'s arrays at ``core``, its part files named by ``chunk``."""

    folder: Path
    chunk: tuple[int, int]
    core: tuple[int, int, int, int]
    run_id: str


_OPEN_ARRAYS: dict[tuple[str, str], zarr.Array] = {}  # (run, path) -> array, per process
_OPEN_LOCK = threading.Lock()
_OPEN_RUNS_KEPT = 3


def write_chunk_files(files: ChunkFiles, rasters: Mapping[str, np.ndarray], parts: Mapping[str, ChunkPart]) -> None:
    """Write a chunk's rasters into its zarr chunk of each task's array and its instances into
    part files; parts whose ``text`` is None were written already. Runs in the engine's writer
    threads or in a finishing process (which opens the arrays once per run)."""
    y0, x0, y1, x1 = files.core
    for task, raster in rasters.items():
        _run_array(files.run_id, str(files.folder / f"{task}.zarr"))[y0:y1, x0:x1] = raster
    name = f"{files.chunk[0]}_{files.chunk[1]}"
    for task, part in parts.items():
        for suffix, text in ((PART_SUFFIX, part.text), (PIECES_SUFFIX, part.pieces)):
            if text is not None and (text or suffix == PART_SUFFIX):  # no file for no pieces
                with atomic_open(files.folder / ".parts" / task / f"{name}{suffix}", "w") as handle:
                    handle.write(text)


def _run_array(run_id: str, path: str, array: zarr.Array | None = None) -> zarr.Array:
    """Run ``run_id``'s array at ``path``, opened for writing once per process (``array``: one
    already open). The arrays of the last :data:`_OPEN_RUNS_KEPT` runs stay open: a slide's last
    chunks are written beside the next slide's first (``SlideRunner.run_many``)."""
    key = (run_id, path)
    with _OPEN_LOCK:
        if key not in _OPEN_ARRAYS:
            array = array if array is not None else zarr.open_array(path, mode="r+")
            # Only chunks with tissue are written: skip zarr's check for all-fill chunks, a full
            # pass over every chunk that cost a fifth of the trivial model's pipeline.
            _OPEN_ARRAYS[key] = array.with_config({"write_empty_chunks": True})
            runs = list(dict.fromkeys(k[0] for k in _OPEN_ARRAYS))  # oldest first
            for old in [k for k in _OPEN_ARRAYS if k[0] in runs[:-_OPEN_RUNS_KEPT]]:
                del _OPEN_ARRAYS[old]
        return _OPEN_ARRAYS[key]


class SlideOutputs:
    """The output folder of one slide.

    Args:
        folder: ``OUT/<slide name>``.
        layout: the output grid.
        fingerprint: settings and model identity; a resume must find the same.
    """

    def __init__(self, folder: Path, layout: TileLayout, fingerprint: Mapping[str, Any]) -> None:
        self.folder, self.layout, self.fingerprint = Path(folder), layout, dict(fingerprint)
        self.journal = Journal(self.folder / "journal.jsonl")
        self.unreadable = Journal(self.folder / "unreadable.jsonl")  # tiles left white (a damaged file)
        self.run_id = ""
        self._lock = threading.Lock()  # chunks are written from several threads

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its lock: a slide prepared in a finishing process comes back to the engine."""
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- state ---------------------------------------------------------------------------

    def is_complete(self) -> bool:
        return (self.folder / "summary.json").is_file() and self._same_run()

    def _same_run(self) -> bool:
        run = self.folder / "run.json"
        return run.is_file() and self._made(_read_run(run)) == json.loads(json.dumps(self.fingerprint))

    def _made(self, made: dict[str, Any]) -> dict[str, Any]:
        """A ``run.json`` as this run's fingerprint reads it: one written before slides were
        identified (vismtl < 2026-11-28) is taken to be of this slide, as it was then."""
        if "slide" in made or "slide" not in self.fingerprint:
            return made
        return {**made, "slide": self.fingerprint["slide"]}

    def prepare(self, resume: bool) -> dict[tuple[int, int], dict[str, Any]]:
        """Start (or continue) the run; returns the chunks already finished."""
        if resume and self._same_run():
            finished = self.journal.entries()
            former = any((self.folder / ".parts").glob(f"*/*{FORMER_PART_SUFFIX}"))
            marker = self.folder / PARTS_FORMAT
            if former or (finished and not (marker.is_file() and marker.read_text() == PIECES_FORMAT)):
                raise RuntimeError(
                    f"cannot resume {self.folder}: its partial instances were written by an older vismtl; "
                    "remove the folder or drop --resume"
                )
            self.sweep()
            return finished
        if resume and (self.folder / "run.json").is_file():
            made = self._made(_read_run(self.folder / "run.json"))
            changes = "; ".join(_differences(made, json.loads(json.dumps(self.fingerprint))))
            raise RuntimeError(
                f"cannot resume {self.folder}: it was made with other settings, another model or another slide "
                f"({changes}); remove it or drop --resume"
            )
        self.clear()
        (self.folder / PARTS_FORMAT).parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.folder / PARTS_FORMAT, "w") as handle:
            handle.write(PIECES_FORMAT)
        write_json(self.folder / "run.json", self.fingerprint)
        return {}

    def clear(self) -> None:
        """Remove what an earlier run of this slide wrote (only vismtl's own files)."""
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            own = path.name in OWN_FILES or path.name.endswith("_map.png") or path.name == ".parts"
            if own or path.suffix in (".zarr", ".geojson"):
                _remove(path)
        self.sweep()

    def sweep(self) -> None:
        """Remove the temporary files (``.<name>.<random>.tmp``) of writes a killed run left unfinished."""
        for pattern in (".*.tmp", ".parts/.*.tmp", ".parts/*/.*.tmp"):  # where atomic writes and new arrays go
            for path in list(self.folder.glob(pattern)):
                _remove(path)

    # -- chunk by chunk ------------------------------------------------------------------

    def create_arrays(self, specs: Mapping[str, tuple[np.dtype, tuple[int, ...]]]) -> None:
        """One zarr array per dense task (``{task: (dtype, trailing shape)}``, as
        :func:`vismtl.wsi.stitch.raster_spec` gives), before any chunk is written: chunks are
        written from writer threads and finishing processes. A resumed run opens the arrays."""
        self.run_id = uuid.uuid4().hex  # names this run's arrays in the writers' caches
        for task, (dtype, trailing) in specs.items():
            path = self.folder / f"{task}.zarr"
            array = _open_array(path)
            if array is None:  # made under a temporary name and renamed: a killed run leaves none half made
                shape = (self.layout.height, self.layout.width, *trailing)
                chunks = (self.layout.chunk, self.layout.chunk, *trailing)
                made = path.with_name(f".{path.name}.{self.run_id}.tmp")
                zarr.create_array(store=str(made), shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
                os.replace(made, path)
                array = zarr.open_array(str(path), mode="r+")
            _run_array(self.run_id, str(path), array)  # this process writes through it

    def chunk_files(self, chunk: tuple[int, int], core: tuple[int, int, int, int]) -> ChunkFiles:
        """Where a chunk's rasters and instances go (for whoever writes them)."""
        return ChunkFiles(self.folder, chunk, core, self.run_id)

    def write_chunk(self, files: ChunkFiles, result: ChunkResult) -> None:
        """Rasters into their zarr chunk and instances into a part file (those the finishing
        process did not write already), then the journal line."""
        write_chunk_files(files, result.rasters, result.parts)
        with self._lock:
            self.journal.record({"chunk": list(files.chunk), **result.stats})

    def note_unreadable(self, tiles: list[tuple[list[int], str]]) -> None:
        """Record model tiles left white because they could not be read: ``([y, x] corner, error)``
        each. Appended and flushed at once, so a resumed run (which reads only unfinished chunks)
        still reports those of the chunks finished before."""
        with self._lock:
            self.unreadable.record(*({"tile": corner, "error": error} for corner, error in tiles))

    def unreadable_tiles(self) -> int:
        """How many different model tiles were left white (:meth:`note_unreadable`), over every run."""
        return len({tuple(line["tile"]) for line in self.unreadable.lines()})

    # -- the end ---------------------------------------------------------------------------

    def write_instances(self, assembled: Callable[[str, list[ObjectPiece]], ChunkPart]) -> tuple[dict[str, int], dict]:
        """Put the per-chunk parts of every instance task together into ``<task>.geojson``, with the
        objects ``assembled(task, pieces)`` makes of the chunks' pieces: ``(Features written per task,
        {task: the assembled objects' part})``."""
        counts, assembled_parts = {}, {}
        parts_root = self.folder / ".parts"
        for task_dir in sorted(p for p in parts_root.iterdir() if p.is_dir()) if parts_root.is_dir() else []:
            task = task_dir.name
            pieces = [p for path in sorted(task_dir.glob(f"*{PIECES_SUFFIX}")) for p in _read_pieces(path)]
            part = assembled_parts[task] = assembled(task, pieces)
            texts = (path.read_text() for path in sorted(task_dir.glob(f"*{PART_SUFFIX}")))
            counts[task] = merge_parts(self.folder / f"{task}.geojson", itertools.chain(texts, [part.text]))
        return counts, assembled_parts  # the parts stay until the summary is written: a rerun does this again

    def write_pictures(
        self, thumbnail: np.ndarray, mask: np.ndarray, instance_tasks: Sequence[str] = (), label_task: str | None = None
    ) -> None:
        """``tissue_mask.png`` and ``thumbnail.png``: the slide with the predictions over it, each
        instance task's objects outlined in a colour of its own, named in a legend below
        (:func:`outlined_objects`); without instance tasks, ``label_task``'s raster by label."""
        write_png_gray(self.folder / "tissue_mask.png", (mask > 0).astype(np.uint8) * 255)
        picture = thumbnail  # the mask's size or finer
        written = [task for task in instance_tasks if (self.folder / f"{task}.zarr").is_dir()]
        if written:
            objects = {task: self._downsampled(task, picture.shape[:2]) > 127 for task in written}
            picture = outlined_objects(picture, objects)
        elif label_task is not None and (self.folder / f"{label_task}.zarr").is_dir():
            picture = overlay(picture, self._downsampled(label_task, picture.shape[:2]).astype(np.int64))
        write_png(self.folder / "thumbnail.png", picture)

    def write_patch_maps(
        self, tiles: Mapping[str, list], step: int, names: Mapping[str, Sequence[str]], picture: np.ndarray
    ) -> None:
        """Per patch-class task (a class per model tile: tissue types), from ``tiles`` (``[y, x,
        class]`` of each tile's corner on the output grid, ``step`` apart): ``<task>.zarr``, uint8
        ``[ceil(H / step), ceil(W / step)]`` holding each tile's class + 1 in its cell (0: no tile
        ran; attributes: the cell's side in output pixels and the class names), and
        ``<task>_map.png``, the classes over the slide's ``picture`` with a legend of ``names``."""
        rows, cols = -(-self.layout.height // step), -(-self.layout.width // step)
        for task, cells in tiles.items():
            grid = np.zeros((rows, cols), np.uint8)
            if cells:
                y, x, c = np.asarray(cells, np.int64).T
                grid[y // step, x // step] = c + 1
            path = self.folder / f"{task}.zarr"
            made = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            array = zarr.create_array(
                store=str(made), shape=grid.shape, chunks=grid.shape, dtype=np.uint8, fill_value=0
            )
            array[:] = grid
            array.attrs.update(cell_px=step, classes=list(names[task]), values="class index + 1; 0 where no tile ran")
            _remove(path)
            os.replace(made, path)
            # each picture pixel shows the cell its output pixel falls in
            at_y = (np.arange(picture.shape[0]) * self.layout.height // picture.shape[0]) // step
            at_x = (np.arange(picture.shape[1]) * self.layout.width // picture.shape[1]) // step
            write_png(
                self.folder / f"{task}_map.png",
                with_legend(overlay(picture, grid[np.ix_(at_y, at_x)]), names[task], grid),
            )

    def _downsampled(self, task: str, size: tuple[int, int]) -> np.ndarray:
        """The task's raster at thumbnail size, read chunk row by chunk row (bounded memory)."""
        array = zarr.open_array(str(self.folder / f"{task}.zarr"), mode="r")
        step = max(1, int(np.ceil(max(array.shape[0] / size[0], array.shape[1] / size[1]))))
        rows = []
        for y in range(0, array.shape[0], self.layout.chunk):
            block = array[y : y + self.layout.chunk : step, ::step]
            rows.append(block[..., 0] if block.ndim == 3 else block)
        small = np.concatenate(rows, axis=0) if rows else np.zeros((1, 1), np.uint8)
        return cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """The summary, which marks the slide complete; then the parts go (kept until now, so that a
        run killed before this point puts the GeoJSON and the counts together again on resuming)."""
        write_json(self.folder / "summary.json", summary)
        shutil.rmtree(self.folder / ".parts", ignore_errors=True)


def _open_array(path: Path) -> zarr.Array | None:
    """The zarr array at ``path`` opened for writing; None where there is none, or only the folder
    of an array whose making was cut short before its metadata (a run killed by vismtl < 2026-11-28),
    which is removed."""
    if not path.exists():
        return None
    try:
        return zarr.open_array(str(path), mode="r+")
    except zarr.errors.ArrayNotFoundError:
        shutil.rmtree(path)
        return None


def _read_run(path: Path) -> dict[str, Any]:
    try:
        made = json.loads(path.read_text())
    except ValueError as err:
        raise RuntimeError(
            f"cannot read {path} ({type(err).__name__}: {err}): the file was changed or damaged after vismtl "
            "wrote it; rerun the slide without --resume"
        ) from err
    if not isinstance(made, dict):
        raise RuntimeError(f"cannot read {path}: not the settings vismtl writes; rerun the slide without --resume")
    return made


def _read_pieces(path: Path) -> list[ObjectPiece]:
    try:
        return read_pieces(path.read_text())
    except (ValueError, KeyError, TypeError) as err:  # JSON, base64 or a record's fields
        raise RuntimeError(
            f"cannot read the object pieces in {path} ({type(err).__name__}: {err}): the file was changed "
            "or damaged after vismtl wrote it; rerun the slide without --resume"
        ) from err


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def overlay(picture: np.ndarray, labels: np.ndarray, alpha: float = 0.45, colour=None) -> np.ndarray:
    """Labels > 0 in palette colours (or all in ``colour``) over an RGB picture of the same size."""
    shown = labels > 0
    colours = PALETTE[labels % 255] if colour is None else np.broadcast_to(np.asarray(colour, np.uint8), picture.shape)
    out = picture.astype(np.float32)
    out[shown] = (1 - alpha) * out[shown] + alpha * colours[shown]
    return out.astype(np.uint8)


def with_legend(picture: np.ndarray, names: Sequence[str], labels: np.ndarray) -> np.ndarray:
    """``picture`` above a white strip naming, in their colours, the classes ``labels`` (class + 1) holds."""
    present = [int(v) - 1 for v in np.unique(labels) if v > 0]
    return legend(picture, [(names[i] if i < len(names) else str(i), PALETTE[i + 1]) for i in present])


def legend(picture: np.ndarray, entries: Sequence[tuple[str, Sequence[int]]]) -> np.ndarray:
    """``picture`` above a white strip with a line per ``(name, colour)``: a box of the colour, the name."""
    size = max(1.0, picture.shape[1] / 1000)  # readable on a 2,048 px picture too
    line, box = int(22 * size), int(16 * size)
    strip = np.full((line * len(entries) + 8, picture.shape[1], 3), 255, np.uint8)
    for row, (name, colour) in enumerate(entries):
        top = 4 + row * line
        strip[top + 3 : top + 3 + box, 6 : 6 + box] = colour
        at = (14 + box, top + 3 + box - int(2 * size))
        cv2.putText(strip, name, at, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * size, (0, 0, 0), max(1, int(size)), cv2.LINE_AA)
    return np.concatenate([picture, strip], axis=0)


# outline colours of the instance tasks, in the tasks' order: they stand out on H&E's pinks and
# purples, where the label palette's dark red would not
OUTLINE_COLOURS = ((0, 255, 0), (255, 215, 0), (0, 190, 255), (255, 120, 0), (255, 255, 255))


def outlined_objects(picture: np.ndarray, objects: Mapping[str, np.ndarray], alpha: float = 0.25) -> np.ndarray:
    """Each task's objects (``{task: bool [H, W]}``) over an RGB picture: tinted, with their borders in
    a colour of the task's own (:data:`OUTLINE_COLOURS`, in order; the borders over every tint, a
    later task's over an earlier one's), and a legend below naming them."""
    colours = dict(zip(objects, itertools.cycle(OUTLINE_COLOURS)))
    for task, shown in objects.items():
        picture = overlay(picture, shown, alpha, colours[task])
    for task, shown in objects.items():
        picture[shown & ~cv2.erode(shown.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)] = colours[task]
    return legend(picture, list(colours.items()))


def merge_summaries(
    entries: Mapping[tuple[int, int], Mapping[str, Any]], assembled: Mapping[str, ChunkPart] | None = None
) -> dict[str, Any]:
    """Add up the per-chunk statistics of the journal and the counts of the objects put together
    from pieces (``assembled``: per task, :meth:`SlideOutputs.write_instances`' part)."""
    assembled = assembled or {}
    assembled_entry = {
        "counts": {task: part.counts for task, part in assembled.items()},
        "area_um2": {task: part.area_um2 for task, part in assembled.items()},
        "cut_objects": sum(part.cut for part in assembled.values()),  # objects larger than the margin
    }
    entries = {**entries, ("assembled",): assembled_entry}
    counts: dict[str, dict[str, int]] = {}
    areas: dict[str, float] = {}
    votes: dict[str, list[int]] = {}
    tiles = cut = finish_s = 0
    for entry in entries.values():
        tiles += entry.get("tiles", 0)
        finish_s += entry.get("finish_s", 0.0)
        cut += entry.get("cut_objects", 0)
        for task, per_class in entry.get("counts", {}).items():
            merged = counts.setdefault(task, {})
            for name, n in per_class.items():
                merged[name] = merged.get(name, 0) + n
        for task, area in entry.get("area_um2", {}).items():
            areas[task] = areas.get(task, 0.0) + area
        for task, hist in entry.get("patch_votes", {}).items():
            total = votes.setdefault(task, [0] * len(hist))
            votes[task] = [a + b for a, b in zip(total, hist)]
    areas = {task: round(area, 3) for task, area in areas.items()}  # not 83046.24999999999: sums of chunks
    summary = {"tiles": tiles, "cut_objects": cut, "counts": counts, "area_um2": areas, "patch_votes": votes}
    return summary | {"finish_s": round(finish_s, 3)}


def _differences(made: Any, now: Any, key: str = "") -> list[str]:
    """What differs between two fingerprints, as ``key: made -> now`` (nested keys dotted)."""
    if isinstance(made, dict) and isinstance(now, dict):
        found = []
        for name in list(made) + [k for k in now if k not in made]:
            found += _differences(made.get(name), now.get(name), f"{key}.{name}" if key else name)
        return found
    return [] if made == now else [f"{key}: {made!r} -> {now!r}"]
