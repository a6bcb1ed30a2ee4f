"""Progress bars that suit where they are shown.

On a terminal, tqdm's bar, rewritten in place. Where stderr is a file or a pipe (a batch job's
log, ``nohup``, ``| tee``), tqdm would write every update after a carriage return, with cursor
moves for nested bars: the log gets one ever longer line that only a terminal can show. There
the bar is a plain line every ``LOG_INTERVAL_S`` seconds, and once more when it ends.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 60.0
_CURSOR_UP = "\x1b[A"  # how tqdm moves between nested bars


class _LogLines:
    """A file for tqdm that writes each status it shows as one line of its own (a bar clearing
    itself, which writes only spaces, writes nothing; nor does a status shown again as it ends)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        line = text.replace(_CURSOR_UP, "").strip()
        if line and line != self.last:
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()


def _on_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(iterable: Iterable | None = None, **options: Any) -> tqdm:
    """``tqdm(iterable, **options)`` on stderr, as wide as the terminal; as lines in a log where
    stderr is not a terminal (then ``leave``, ``mininterval`` and the bar's look are the log's)."""
    stream = sys.stderr
    if options.get("disable") or _on_terminal(stream):
        return tqdm(iterable, **{"dynamic_ncols": True, **options})  # as wide as the terminal, resized or not
    # maxinterval too: tqdm's monitor thread would otherwise show a slow bar every 10 s
    interval = dict(mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S)
    return tqdm(iterable, **{**options, **interval, "file": _LogLines(stream), "ascii": True, "leave": True})


__all__ = ["LOG_INTERVAL_S", "progress_bar"]
