"""Which slides a run takes: files, folders (DICOM series among them) and .txt lists (vismtl/wsi/inputs.py)."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from vismtl.wsi.inputs import expand_inputs

ROOT = Path(__file__).resolve().parents[1]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_folders_lists_and_files_expand_in_order_with_unique_names(tmp_path):
    folder = tmp_path / "slides"
    b, a, scan = touch(folder / "b.svs"), touch(folder / "a.TIFF"), touch(folder / "scan.ndpi")
    touch(folder / "notes.csv")  # not a slide
    touch(folder / "case1" / "deep.svs")  # subfolders are not searched
    other = touch(tmp_path / "other" / "a.svs")  # same stem as a.TIFF
    listing = touch(tmp_path / "lists" / "batch.txt")
    third = touch(tmp_path / "third" / "c.svs")
    listing.write_text(f"# the second scanner\n\n../other/a.svs\n  {b}  \n{tmp_path / 'gone.svs'}\n../third\n")

    slides = expand_inputs([folder, listing, scan])

    assert [s.path for s in slides] == [a, b, scan, other.resolve(), tmp_path / "gone.svs", third.resolve()]
    assert [s.name for s in slides] == ["a", "b", "scan", "a_2", "gone", "c"]  # a listed folder: its slides
    # duplicates (b.svs twice, scan.ndpi twice) are run once; a missing slide is kept, to fail in the manifest


def test_inputs_without_slides_stop_at_once_naming_them(tmp_path, caplog):
    empty, listing = tmp_path / "empty", tmp_path / "none.txt"
    empty.mkdir()
    touch(empty / "readme.md")
    listing.write_text("# nothing yet\n")
    slide = touch(tmp_path / "one.svs")
    with caplog.at_level(logging.WARNING, logger="vismtl"):
        assert [s.name for s in expand_inputs([empty, slide])] == ["one"]
    assert f"{empty} holds no slides" in caplog.text
    with pytest.raises(FileNotFoundError, match=r"no slides in the inputs \(.*empty, .*none\.txt\).*subfolders"):
        expand_inputs([empty, listing])


def test_the_tool_stops_before_reading_the_checkpoint_when_no_input_holds_a_slide(tmp_path):
    (tmp_path / "empty").mkdir()
    config = ROOT / "configs" / "cerberus" / "quickstart_tissue.py"
    command = [sys.executable, str(ROOT / "tools" / "infer_wsi.py"), str(config), "none.pth", str(tmp_path / "empty")]
    result = subprocess.run([*command, "--out-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: no slides in the inputs ({tmp_path / 'empty'})")
    assert not (tmp_path / "out").exists()


def test_a_folder_of_dicom_files_gives_one_slide_per_series(tmp_path, monkeypatch):
    """The shared DICOM pair is one slide; a copy whose series UID differs is a second one, and a file
    whose header does not read stands alone (it fails in the manifest). The UIDs come from the
    headers: OpenSlide, which scans the whole folder at each open, is not opened."""
    shared = ROOT.parent / "shared" / "data" / "slides"
    if not (shared / "boxes_0.dcm").is_file():
        pytest.skip(f"shared slides not found at {shared}")
    series = b"1.3.6.1.4.1.5962.99.1.1747645553.419656796.1689669825649.4.0"
    for k in (0, 1):
        data = (shared / f"boxes_{k}.dcm").read_bytes()
        assert data.count(series) == 1
        (tmp_path / f"a_{k}.dcm").write_bytes(data)
        (tmp_path / f"b_{k}.dcm").write_bytes(data.replace(series, series[:-3] + b"9.0"))  # another slide
    (tmp_path / "c.dcm").write_bytes(b"not a DICOM file")
    import openslide

    def opened(*args):
        raise AssertionError("OpenSlide opened while grouping DICOM files")

    monkeypatch.setattr(openslide, "OpenSlide", opened)
    assert [s.name for s in expand_inputs([tmp_path])] == ["a_0", "b_0", "c"]
