"""The batch's table: one row per slide (``DIR/slides.csv``), for a spreadsheet or a data frame.

Each row holds the slide's manifest entry (name, status, error) and, for a slide whose outputs
are complete (done now, or skipped as done before), its summary's figures: tissue area, objects
per task and class, their area, the tissue-class proportions, the unreadable tiles and the time.
Columns are the union over the slides (a class no slide has is no column), in the order they
first appear.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vismtl.io import atomic_open

__all__ = ["slide_row", "write_slide_table"]

_FIRST = ("name", "status", "error", "slide", "tissue_mm2", "tiles", "unreadable_tiles")


def slide_row(entry: Mapping[str, Any], summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """A slide's row: its manifest entry's name, status and error, and its summary's figures."""
    row: dict[str, Any] = {key: entry.get(key) for key in ("name", "status", "error", "slide")}
    if summary is None:
        return row
    height, width = summary["output_grid"]
    pixel_mm2 = (summary["settings"]["mpp"] / 1000.0) ** 2  # an output pixel
    row["tissue_mm2"] = round(summary["tissue_fraction"] * height * width * pixel_mm2, 4)
    row["tiles"] = summary["tiles"]
    row["unreadable_tiles"] = summary.get("unreadable_tiles", 0)
    for task, per_class in summary["counts"].items():
        row[f"{task} count"] = sum(per_class.values())
        row |= {f"{task} count: {name}": n for name, n in per_class.items()}
    for task, area in summary["area_um2"].items():
        row[f"{task} area um2"] = area
    for task, shares in summary["tissue_classes"].items():
        row |= {f"{task}: {name}": round(share, 4) for name, share in shares.items()}
    row["wall_s"] = summary["timings"]["wall_s"]
    return row


def write_slide_table(out_dir: str | Path, entries: Sequence[Mapping[str, Any]]) -> Path:
    """``out_dir/slides.csv`` from the manifest's ``entries`` (and each complete slide's
    ``summary.json``), written atomically; its path."""
    out_dir = Path(out_dir)
    rows = []
    for entry in entries:
        summary_path = out_dir / entry["name"] / "summary.json"
        complete = entry.get("status") in ("done", "skipped") and summary_path.is_file()
        rows.append(slide_row(entry, json.loads(summary_path.read_text()) if complete else None))
    columns = list(_FIRST)
    for row in rows:
        columns += [key for key in row if key not in columns]
    path = out_dir / "slides.csv"
    with atomic_open(path, "w") as handle:
        writer = csv.DictWriter(handle, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path
