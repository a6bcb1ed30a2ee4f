"""Which slides to run: files, folders and text files listing slides, expanded in order."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("vismtl")

SLIDE_SUFFIXES = (
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm",
    ".png", ".jpg", ".jpeg",
)  # fmt: skip
_KINDS = " ".join(SLIDE_SUFFIXES)
SERIES_INSTANCE_UID = 0x0020000E  # DICOM tag (0020,000E)


@dataclass(frozen=True)
class SlideInput:
    path: Path
    name: str  # the output folder's name: unique among the inputs


def _from_folder(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
    dicom = [p for p in files if p.suffix.lower() == ".dcm"]
    return [p for p in files if p.suffix.lower() != ".dcm"] + _one_file_per_series(dicom)


def _one_file_per_series(files: list[Path]) -> list[Path]:
    """The first file of each DICOM slide among ``files``: a slide is several files (one per level)
    that share a series UID, and OpenSlide opens it from any of them, finding the others in the
    same folder. The UID is read from each file's header: opening each file with OpenSlide would
    scan the whole folder every time, hours for thousands of files. A file whose header does not
    read stands alone, to fail in the manifest with OpenSlide's error."""
    if len(files) < 2:
        return files
    firsts, seen = [], set()
    for path in files:
        series = _series_uid(path) or str(path)
        if series not in seen:
            seen.add(series)
            firsts.append(path)
    return firsts


def _series_uid(path: Path) -> str | None:
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[SERIES_INSTANCE_UID])
        element = header.get_item(SERIES_INSTANCE_UID)  # raw: no validation of the UID, only compared
    except Exception:  # noqa: BLE001 -- any unreadable header: the file stands alone (see above)
        return None
    value = getattr(element, "value", None)
    uid = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")
    return uid.strip("\0 ") or None


def _from_list(listing: Path) -> list[Path]:
    base = listing.parent
    paths = []
    for line in listing.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(line)
            paths.append(path if path.is_absolute() else base / path)
    return paths


def _expanded(item: Path, lists: bool) -> list[Path]:
    """The slides of one input: a folder's, a list's (``lists``; its lines may name folders), or itself."""
    if item.is_dir():
        found = _from_folder(item)
    elif lists and item.suffix.lower() == ".txt" and item.is_file():
        found = [path for listed in _from_list(item) for path in _expanded(listed, lists=False)]
    else:
        return [item]
    if not found:
        log.warning("%s holds no slides (%s files)", item, _KINDS)
    return found


def expand_inputs(inputs: Iterable[str | Path]) -> list[SlideInput]:
    """Slide paths from files, folders (their slide files, not their subfolders' ones) and ``.txt``
    lists (of files and folders), duplicates removed.

    Missing paths are kept, so that they are reported in the manifest as failed. Output
    names are the file stems, made unique with a suffix where two slides share a stem. A folder
    or list without slides is logged; inputs without any slide raise ``FileNotFoundError``.
    """
    inputs = [Path(item) for item in inputs]
    paths = [path for item in inputs for path in _expanded(item, lists=True)]
    if not paths:
        named = ", ".join(map(str, inputs)) or "none given"
        raise FileNotFoundError(
            f"no slides in the inputs ({named}): pass slide files ({_KINDS}), folders holding them "
            "(their subfolders are not searched) or .txt files listing them, one path a line"
        )
    unique = list(dict.fromkeys(p.resolve() if p.exists() else p for p in paths))
    slides, used = [], set()
    for path in unique:
        name = path.stem
        suffix = 1
        while name in used:
            suffix += 1
            name = f"{path.stem}_{suffix}"
        used.add(name)
        slides.append(SlideInput(path, name))
    return slides
