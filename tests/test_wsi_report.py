"""The batch's table, DIR/slides.csv (vismtl/wsi/report.py)."""

import csv
import json

from vismtl.wsi.report import write_slide_table


def summary(counts: dict, stroma: float) -> dict:
    return {
        "output_grid": [2000, 4000],
        "settings": {"mpp": 0.5},
        "tissue_fraction": 0.25,
        "tiles": 120,
        "unreadable_tiles": 3,
        "counts": counts,
        "area_um2": {task: 10.0 * sum(c.values()) for task, c in counts.items()},
        "tissue_classes": {"tissue": {"stroma": stroma, "adipose": 1 - stroma}},
        "timings": {"wall_s": 12.5},
    }


def test_a_row_per_slide_with_the_union_of_classes_and_blanks_where_a_slide_has_none(tmp_path):
    slides = {
        "a": summary({"nuclei": {"lymphocyte": 5, "epithelial": 2}}, 0.123456),
        "b": summary({"nuclei": {"plasma": 4}, "gland": {"gland": 1}}, 0.5),
    }
    for name, data in slides.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(data))
    entries = [
        {"name": "a", "status": "done", "error": None, "slide": "/s/a.svs"},
        {"name": "bad", "status": "failed", "error": "SlideError: cannot open slide /s/bad.svs", "slide": "/s/bad.svs"},
        {"name": "b", "status": "skipped", "error": None, "slide": "/s/b.svs"},  # done by an earlier run
    ]
    path = write_slide_table(tmp_path, entries)
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["a", "bad", "b"]
    a, bad, b = rows
    assert a["tissue_mm2"] == "0.5"  # 0.25 of 2000 x 4000 px of 0.5 um
    assert (a["nuclei count"], a["nuclei count: lymphocyte"], a["nuclei count: plasma"]) == ("7", "5", "")
    assert (b["nuclei count"], b["nuclei count: plasma"], b["gland count: gland"]) == ("4", "4", "1")
    assert a["tissue: stroma"] == "0.1235" and a["unreadable_tiles"] == "3" and a["wall_s"] == "12.5"
    assert bad["status"] == "failed" and bad["error"].startswith("SlideError") and bad["tiles"] == ""
    assert list(rows[0])[:7] == ["name", "status", "error", "slide", "tissue_mm2", "tiles", "unreadable_tiles"]
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file
