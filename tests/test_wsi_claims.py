"""Slides shared out among ranks by exclusive claim files (vismtl/wsi/claims.py)."""

import json
import subprocess
import sys
from pathlib import Path

from vismtl.wsi.claims import SlideClaims, largest_first
from vismtl.wsi.inputs import SlideInput

ROOT = Path(__file__).resolve().parents[1]

# One "rank": takes slides from the shared claims with a random pause per slide, prints what it took.
RANK = """
import json, random, sys, time
from pathlib import Path
from vismtl.wsi.claims import SlideClaims
from vismtl.wsi.inputs import SlideInput

folder, rank, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
start = float(sys.argv[4])
time.sleep(max(0.0, start - time.time()))  # all ranks start together: they race for the first slides
random.seed(rank)
taken = []
for slide in SlideClaims(folder, rank).take([SlideInput(Path(f"s{k}.svs"), f"s{k}") for k in range(count)]):
    taken.append(slide.name)
    time.sleep(random.random() * 0.004)
print(json.dumps(taken))
"""


def test_racing_ranks_take_every_slide_exactly_once(tmp_path):
    import time

    folder, count = tmp_path / ".claims", 200
    SlideClaims(folder, 0).prepare()
    start = time.time() + 1.5
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK, str(folder), str(r), str(count), str(start)], stdout=subprocess.PIPE
        )
        for r in range(4)
    ]
    taken = [json.loads(rank.communicate(timeout=60)[0]) for rank in ranks]
    everything = [name for names in taken for name in names]
    assert sorted(everything) == sorted(f"s{k}" for k in range(count))  # none twice, none skipped
    assert all(names for names in taken)  # each rank took some: the slides were shared out
    for rank, names in enumerate(taken):
        assert all((folder / name).read_text() == f"{rank}\n" for name in names)  # who took it
        order = [int(name[1:]) for name in names]
        assert order == sorted(order)  # each took the first free slide each time


def test_claims_are_taken_only_when_the_next_slide_is_asked_for(tmp_path):
    claims = SlideClaims(tmp_path / ".claims", 1)
    claims.prepare()
    slides = [SlideInput(Path(f"s{k}.svs"), f"s{k}") for k in range(3)]
    other = SlideClaims(tmp_path / ".claims", 0)
    assert other.claim(slides[1])
    taking = claims.take(slides)
    assert not list((tmp_path / ".claims").glob("s0"))  # nothing taken before it is asked for
    assert next(taking).name == "s0"
    assert sorted(p.name for p in (tmp_path / ".claims").iterdir()) == ["s0", "s1"]
    assert next(taking).name == "s2"  # s1 was the other rank's
    assert next(taking, None) is None
    assert not other.claim(slides[2])


def test_an_earlier_runs_claims_are_cleared_and_the_folder_removed_at_the_end(tmp_path):
    folder = tmp_path / ".claims"
    folder.mkdir()
    (folder / "s0").write_text("3\n")  # left by a killed run
    claims = SlideClaims(folder, 0)
    claims.prepare()
    assert [s.name for s in claims.take([SlideInput(Path("s0.svs"), "s0")])] == ["s0"]
    claims.remove()
    assert not folder.exists()


def test_largest_files_are_offered_first_ties_and_missing_files_in_input_order(tmp_path):
    sizes = {"a": 10, "b": 300, "c": 10, "d": 2000}
    slides = []
    for name, size in sizes.items():
        (tmp_path / f"{name}.svs").write_bytes(b"x" * size)
        slides.append(SlideInput(tmp_path / f"{name}.svs", name))
    slides.insert(1, SlideInput(tmp_path / "missing.svs", "missing"))
    assert [s.name for s in largest_first(slides)] == ["d", "b", "a", "c", "missing"]
