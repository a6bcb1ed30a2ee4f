"""Rank 0's view of the other ranks' manifest parts: its progress bar, its wait, the merge."""

from __future__ import annotations

import errno
import io
import logging
import socket
import threading
import time

import pytest
from tqdm import tqdm

from vismtl.config import ConfigError
from vismtl.io import hold_folder
from vismtl.wsi.ranks import RankProgress, check_shared, merge_manifests, read_parts, wait_for_ranks, write_part


def entry(name: str, status: str = "done") -> dict:
    return {"name": name, "status": status}


def test_rank_0_waits_until_every_part_is_finished(tmp_path):
    write_part(tmp_path, 0, [entry("a")], finished=True)
    write_part(tmp_path, 1, [entry("b")])  # rank 1 still runs a slide
    ended = []
    waiting = threading.Thread(target=lambda: (wait_for_ranks(tmp_path, 2, period=0.02), ended.append(True)))
    waiting.start()
    time.sleep(0.3)
    assert not ended  # rank 1's part is not finished: still waiting
    write_part(tmp_path, 1, [entry("b"), entry("c", "failed")], finished=True)
    waiting.join(timeout=5)
    assert ended
    merged = merge_manifests(tmp_path, 2, ["c", "b", "a"])
    assert [e["name"] for e in merged] == ["c", "b", "a"] and not read_parts(tmp_path, 2)


def test_a_rank_without_a_part_is_waited_for(tmp_path):
    write_part(tmp_path, 0, [], finished=True)
    started = time.monotonic()
    waiting = threading.Thread(target=wait_for_ranks, args=(tmp_path, 2), kwargs={"period": 0.02})
    waiting.start()
    time.sleep(0.2)
    write_part(tmp_path, 1, [entry("x")], finished=True)
    waiting.join(timeout=5)
    assert not waiting.is_alive() and time.monotonic() - started >= 0.2


def test_rank_0_s_bar_moves_with_every_rank_s_slides_between_its_own(tmp_path):
    bar = tqdm(total=4, file=io.StringIO())
    with RankProgress(bar, tmp_path, 2, period=0.02):
        write_part(tmp_path, 1, [entry("b"), entry("c", "failed")])  # rank 0 is still on its first slide
        deadline = time.monotonic() + 5
        while bar.n < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bar.n == 2
        write_part(tmp_path, 0, [entry("a")])
    assert bar.n == 3  # shown once more as it stops
    assert bar.postfix == "done=2, failed=1"


def test_a_rank_that_does_not_see_rank_0_s_folder_says_so_instead_of_taking_every_slide_again(tmp_path):
    """Ranks on a node whose --out-dir is its own disk would take every slide again and rank 0 would
    wait for their parts for ever: each must see the lock rank 0 took, written late or not at all."""
    shared, own_disk = tmp_path / "shared", tmp_path / "node2"
    shared.mkdir()
    own_disk.mkdir()
    lock = hold_folder(shared, "--out-dir")
    try:
        text = lock.holder
        check_shared(shared, text, rank=1, patience=0.0)  # a node that shares the folder
        message = rf"rank 3 on {socket.gethostname()} does not see the files rank 0 writes in {own_disk}: --out-dir"
        with pytest.raises(ConfigError, match=message):
            check_shared(own_disk, text, rank=3, patience=0.3)
        (own_disk / ".lock").write_text("pid 7 on node2, since 2026-11-01 10:00:00\n")  # an earlier run's
        with pytest.raises(ConfigError, match="every node shares"):
            check_shared(own_disk, text, rank=3, patience=0.3)
        late = threading.Timer(0.3, lambda: (own_disk / ".lock").write_text(text + "\n"))  # NFS showing it late
        late.start()
        check_shared(own_disk, text, rank=3, patience=5.0)
        late.join()
    finally:
        lock.close()


def test_a_folder_on_a_file_system_without_locks_is_written_with_a_warning(tmp_path, monkeypatch, caplog):
    """NFS without its lock daemon answers ENOLCK: the run goes on, unlocked, saying so."""
    fcntl = pytest.importorskip("fcntl")

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    with caplog.at_level(logging.WARNING, logger="vismtl"):
        assert hold_folder(tmp_path, "--out-dir") is None
    assert f"cannot lock {tmp_path} ([Errno {errno.ENOLCK}] No locks available)" in caplog.text
