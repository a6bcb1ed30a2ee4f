"""Progress bars: tqdm's on a terminal, plain lines in a log."""

from __future__ import annotations

import io
import re
import sys

from vismtl.progress import LOG_INTERVAL_S, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_nested_bars_are_plain_lines_at_their_start_and_end(monkeypatch):
    """A batch job's log: no carriage returns or cursor moves (one endless line in a file), and a
    fast bar writes its first and last status only, not one line per update."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress_bar(total=2, desc="slides", unit="slide") as slides:
        for name in ("a", "b"):
            with progress_bar(total=500, desc=name, unit="tile", leave=False) as tiles:
                for _ in range(50):
                    tiles.update(10)
            slides.update()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    assert [line.split(":")[0] for line in lines] == ["slides", "a", "a", "b", "b", "slides"]
    counts = [re.search(r" (\d+/\d+) ", line)[1] for line in lines]
    assert counts == ["0/2", "0/500", "500/500", "0/500", "500/500", "2/2"]
    assert all(line == line.strip() and "|##########|" in line for line in lines[2::2] + lines[-1:])


def test_in_a_log_a_bar_writes_again_after_the_interval(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress_bar(total=10, desc="train") as bar:
        now = [bar.last_print_t]
        bar._time = lambda: now[0]  # tqdm's clock
        bar.update(1)
        now[0] += LOG_INTERVAL_S / 2
        bar.update(1)
        assert len(log.getvalue().splitlines()) == 1  # only the start
        now[0] += LOG_INTERVAL_S
        bar.update(1)
        assert log.getvalue().splitlines()[-1].startswith("train:  30%")
        bar.set_postfix(loss=1.5)  # shown at once (the training's logged steps) ...
    assert log.getvalue().splitlines()[-1].endswith(", loss=1.5]")
    assert log.getvalue().splitlines()[-2] != log.getvalue().splitlines()[-1]  # ... and not again as it closes


def test_on_a_terminal_it_is_tqdm_s_own_bar(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar(total=3, desc="slides", leave=False, mininterval=0) as bar:
        bar.update(3)
        assert bar.leave is False and bar.mininterval == 0
    assert "\r" in terminal.getvalue()  # rewritten in place
