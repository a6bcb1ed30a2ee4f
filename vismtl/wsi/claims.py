"""Slides shared out among ranks as they become free, so that no rank idles while others still
have several slides queued.

A fixed split (rank ``r`` takes slides ``r, r + W, ...``) leaves the ranks that drew the large
slides working long after the others have stopped: labs mix biopsies and resections, whose tissue
differs tenfold. Here each rank, when it is ready for its next slide, takes the first one that no
rank has taken, by creating that slide's claim file exclusively (``O_CREAT | O_EXCL``: of ranks
racing for one file exactly one creates it, also on a file system shared by several nodes, which
the output folder already is). Slides are offered largest file first, so that the last slides to
start are the short ones (the longest-processing-time-first rule).

The claim files live in ``DIR/.claims/``: rank 0 clears it before the ranks start taking slides
(``prepare``; a barrier follows) and removes it when all have finished (``remove``), so claims
left by a killed run never hide a slide from the next one; that run's ``--resume`` skips what it
finished.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from vismtl.wsi.inputs import SlideInput

__all__ = ["SlideClaims", "largest_first"]


def largest_first(slides: Sequence[SlideInput]) -> list[SlideInput]:
    """``slides`` by file size, largest first (ties, and missing files last, in input order)."""

    def size(slide: SlideInput) -> int:
        try:
            return slide.path.stat().st_size
        except OSError:
            return -1

    return sorted(slides, key=size, reverse=True)  # sorted is stable: ties keep their order


class SlideClaims:
    """The claim files of one run in ``folder`` (``DIR/.claims``), for rank ``rank``."""

    def __init__(self, folder: str | Path, rank: int) -> None:
        self.folder, self.rank = Path(folder), rank

    def prepare(self) -> None:
        """Rank 0, before any rank takes a slide: an empty folder."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)

    def remove(self) -> None:
        """Rank 0, after every rank has finished."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def claim(self, slide: SlideInput) -> bool:
        """Take ``slide`` for this rank, unless another rank has: whether this one got it."""
        try:
            fd = os.open(self.folder / slide.name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:  # who took it: for a person looking into a running batch
            handle.write(f"{self.rank}\n")
        return True

    def take(self, slides: Sequence[SlideInput]) -> Iterator[SlideInput]:
        """The slides this rank takes, one at a time: each the first of ``slides`` not yet taken when
        the next one is asked for (ask when ready to start it)."""
        for slide in slides:
            if self.claim(slide):
                yield slide
