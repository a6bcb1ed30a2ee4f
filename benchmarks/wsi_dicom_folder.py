"""Finding the slides in a folder of DICOM files: series UIDs read from the headers against each file
opened with OpenSlide (the way until 2026-11-28), which scans the whole folder at every open.

    python benchmarks/wsi_dicom_folder.py [--slides 25 50 100 200] [--repeats 3]

Each slide is a copy of the shared two-file DICOM slide (``../shared/data/slides/boxes_*.dcm``)
under a series UID of its own, all in one folder. Both ways are checked to find the same slides
first; medians of ``--repeats``, the two ways alternating.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openslide

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_description  # noqa: E402
from vismtl.wsi.inputs import expand_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "slides"
SERIES = b"1.3.6.1.4.1.5962.99.1.1747645553.419656796.1689669825649.4.0"


def dicom_folder(folder: Path, slides: int) -> None:
    """``slides`` two-file DICOM slides in ``folder``, each under a series UID of its own."""
    for n in range(slides):
        uid = SERIES[: -len(str(n))] + str(n).encode()  # same length; no component with a leading 0
        for k in (0, 1):
            data = (SHARED / f"boxes_{k}.dcm").read_bytes()
            (folder / f"slide{n:04d}_{k}.dcm").write_bytes(data.replace(SERIES, uid))


def opened_each(folder: Path) -> list[str]:
    """The former way: each file opened with OpenSlide for its series UID, the first file of each kept."""
    firsts, seen = [], set()
    for path in sorted(folder.glob("*.dcm")):
        with openslide.OpenSlide(str(path)) as slide:
            series = slide.properties.get("dicom.SeriesInstanceUID") or str(path)
        if series not in seen:
            seen.add(series)
            firsts.append(path.stem)
    return firsts


def timed(function, folder: Path) -> tuple[float, list[str]]:
    started = time.perf_counter()
    names = function(folder)
    return time.perf_counter() - started, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (SHARED / "boxes_0.dcm").is_file():
        raise SystemExit(f"the shared DICOM slide is not at {SHARED}")
    ways = {
        "headers": lambda folder: [s.name for s in expand_inputs([folder])],
        "OpenSlide, each file": opened_each,
    }
    print(f"device: {device_description()}; openslide {openslide.__library_version__}")
    print(f"{'slides':>6s} {'files':>6s} {'headers s':>10s} {'OpenSlide s':>12s} {'ratio':>7s}")
    for slides in args.slides:
        with tempfile.TemporaryDirectory(prefix="wsi_dicom_") as name:
            folder = Path(name)
            dicom_folder(folder, slides)
            seconds: dict[str, list[float]] = {way: [] for way in ways}
            for repeat in range(args.repeats):
                order = list(ways) if repeat % 2 == 0 else list(ways)[::-1]
                found = {}
                for way in order:
                    elapsed, found[way] = timed(ways[way], folder)
                    seconds[way].append(elapsed)
                if len(set(map(tuple, found.values()))) != 1 or len(found["headers"]) != slides:
                    raise SystemExit(f"the two ways find different slides: {found}")
            fast, slow = (statistics.median(seconds[way]) for way in ways)
            print(f"{slides:6d} {2 * slides:6d} {fast:10.3f} {slow:12.3f} {slow / fast:6.1f}x")


if __name__ == "__main__":
    main()
