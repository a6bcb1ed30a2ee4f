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
    """JSON lines appended to ``path``, each flushed to disk as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def lines(self) -> list[dict[str, Any]]:
        """Every whole line recorded so far (a line a crash cut short is left out)."""
        found = []
        for line in self.path.read_text().splitlines() if self.path.exists() else []:
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return found

    def entries(self) -> dict[tuple[int, int], dict[str, Any]]:
        """``{(cy, cx): entry}`` of the chunks recorded as finished."""
        return {tuple(entry["chunk"]): entry for entry in self.lines()}

    def record(self, *entries: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.writelines(json.dumps(entry) + "\n" for entry in entries)
            handle.flush()
            os.fsync(handle.fileno())
