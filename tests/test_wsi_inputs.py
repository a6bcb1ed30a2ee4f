"""Which slides a run takes: files, folders and .txt lists (vismtl/wsi/inputs.py)."""

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
    levels = [touch(folder / "dicom" / f"level{k}.dcm") for k in range(3)]
    other = touch(tmp_path / "other" / "a.svs")  # same stem as a.TIFF
    listing = touch(tmp_path / "lists" / "batch.txt")
    listing.write_text(f"# the second scanner\n\n../other/a.svs\n  {b}  \n{tmp_path / 'gone.svs'}\n")

    slides = expand_inputs([folder, listing, folder / "dicom", scan])

    assert [s.path for s in slides] == [a, b, scan, other.resolve(), tmp_path / "gone.svs", levels[0]]
    assert [s.name for s in slides] == ["a", "b", "scan", "a_2", "gone", "level0"]
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
