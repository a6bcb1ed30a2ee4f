"""The ranks' manifest parts under torchrun: each rank writes its own, rank 0 reads them.

Each rank rewrites ``DIR/.manifest.rank<r>.json`` (atomically) after every slide and marks it
``finished`` after its last one. Rank 0 shows every rank's slides in its progress bar
(:class:`RankProgress`), waits for every part to be finished (:func:`wait_for_ranks`) and
merges them into ``manifest.json`` (:func:`merge_manifests`).

The wait is on files, not a collective: ranks take slides as they become free, so one may end
a whole slide (minutes to hours) after the others, longer than a process group's timeout (10
minutes with NCCL, 30 with gloo), after which a rank waiting in a barrier is aborted and the
batch's manifest is never merged. A rank that dies is ended with the others by torchrun.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vismtl.config import ConfigError
from vismtl.io import LOCK_FILE, write_json

log = logging.getLogger("vismtl")


def part_path(out_dir: Path, rank: int) -> Path:
    return out_dir / f".manifest.rank{rank}.json"


def write_part(out_dir: Path, rank: int, entries: list[dict[str, Any]], finished: bool = False) -> None:
    write_json(part_path(out_dir, rank), {"slides": entries, "finished": finished})


def clear_parts(out_dir: Path) -> None:
    """Remove a killed run's parts (rank 0, before any rank starts)."""
    for stale in out_dir.glob(".manifest.rank*.json"):
        stale.unlink()


def read_parts(out_dir: Path, ranks: int) -> dict[int, dict[str, Any]]:
    """The parts written so far, by rank (written atomically: whole or absent)."""
    parts = {}
    for rank in range(ranks):
        path = part_path(out_dir, rank)
        if path.is_file():
            parts[rank] = json.loads(path.read_text())
    return parts


def rank_entries(out_dir: Path, ranks: int) -> list[dict[str, Any]]:
    """The manifest entries the ranks have written so far, rank by rank."""
    return [entry for part in read_parts(out_dir, ranks).values() for entry in part["slides"]]


def check_shared(out_dir: Path, holder: str, rank: int, patience: float = 10.0) -> None:
    """Raise a ConfigError unless rank ``rank`` sees the lock rank 0 took in ``out_dir`` (``holder``:
    what rank 0 wrote in it, :attr:`vismtl.io.FolderLock.holder`).

    Ranks share slides and manifest parts through ``out_dir``. Where a node does not see rank 0's
    files (a folder on each node's own disk), its ranks would take every slide again and rank 0
    would wait for their parts for ever. ``patience``: a network file system may show another
    node's new file a few seconds late.
    """
    path, deadline = out_dir / LOCK_FILE, time.monotonic() + patience
    while True:
        try:
            if path.read_text().strip() == holder:
                return
        except OSError:  # not there (yet)
            pass
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"rank {rank} on {socket.gethostname()} does not see the files rank 0 writes in {out_dir}: "
                "--out-dir must be a folder that every node shares (a network file system), not one on each node's disk"
            )
        time.sleep(0.2)


def wait_for_ranks(out_dir: Path, ranks: int, period: float = 1.0, note_every: float = 600.0) -> None:
    """Return once every rank's part is finished; every ``note_every`` seconds, log which are not."""
    noted = time.monotonic()
    while True:
        parts = read_parts(out_dir, ranks)
        running = [rank for rank in range(ranks) if not parts.get(rank, {}).get("finished")]
        if not running:
            return
        if time.monotonic() - noted >= note_every:
            log.info("waiting for rank(s) %s to end their slides", ", ".join(map(str, running)))
            noted = time.monotonic()
        time.sleep(period)


def merge_manifests(out_dir: Path, ranks: int, names: Sequence[str]) -> list[dict[str, Any]]:
    """Rank parts -> ``manifest.json``, its slides in the order of ``names`` (the inputs'); its entries."""
    order = {name: k for k, name in enumerate(names)}
    merged = sorted(rank_entries(out_dir, ranks), key=lambda e: order.get(e["name"], len(order)))
    write_json(out_dir / "manifest.json", {"slides": merged})
    for rank in range(ranks):
        part_path(out_dir, rank).unlink(missing_ok=True)
    return merged


class RankProgress:
    """Rank 0's progress bar over every rank's slides, read from their parts every ``period``
    seconds by a thread of its own: it moves when any rank ends a slide, also while rank 0 runs
    a long one or waits for the last ranks. The only writer of ``bar`` while it runs."""

    def __init__(self, bar, out_dir: Path, ranks: int, period: float = 2.0) -> None:
        self.bar, self.out_dir, self.ranks, self.period = bar, out_dir, ranks, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vismtl-progress", daemon=True)

    def __enter__(self) -> RankProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.show()

    def show(self) -> None:
        try:
            entries = rank_entries(self.out_dir, self.ranks)
        except (OSError, ValueError, KeyError):  # a part being removed, or not ours: the next round
            return
        self.bar.set_postfix(Counter(e["status"] for e in entries), refresh=False)
        self.bar.update(len(entries) - self.bar.n)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.show()


__all__ = [
    "RankProgress",
    "check_shared",
    "clear_parts",
    "merge_manifests",
    "rank_entries",
    "wait_for_ranks",
    "write_part",
]
