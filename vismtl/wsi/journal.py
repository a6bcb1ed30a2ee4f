"""The per-slide journal: one JSON line per finished chunk, so a rerun redoes only unfinished ones.

A line is appended (and flushed to disk) only after everything the chunk produced has been
written, so a process killed at any moment leaves a journal that lists only complete
chunks; a half-written last line is ignored on reading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self) -> dict[tuple[int, int], dict[str, Any]]:
        """``{(cy, cx): entry}`` of the chunks recorded as finished."""
        done: dict[tuple[int, int], dict[str, Any]] = {}
        if not self.path.exists():
            return done
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the line a crash cut short
                continue
            done[tuple(entry["chunk"])] = entry
        return done

    def record(self, entry: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
