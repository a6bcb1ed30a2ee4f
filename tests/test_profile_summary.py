"""benchmarks/profile_summary.py: py-spy's raw stacks grouped per process and thread, shares right."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from profile_summary import read_stacks, summarise  # noqa: E402

ENGINE = 'process 10:"python tools/infer_wsi.py a; b";thread (10): MainThread;main (tools/infer_wsi.py:5);'
WORKER = 'process 11:"python -c from multiprocessing.spawn import spawn_main; spawn_main()";thread (11): MainThread;'
RAW = f"""\
{ENGINE}run (vismtl/wsi/engine.py:138);forward (model.py:9) 30
{ENGINE}run (vismtl/wsi/engine.py:140);stitch (stitch.py:3) 10
{ENGINE}import_all (x.py:1) 60
{ENGINE.split("thread")[0]}{WORKER}finish (finishing.py:7) 20
"""


def test_stacks_group_by_process_and_thread_with_semicolons_in_command_lines(tmp_path):
    raw = tmp_path / "profile.raw"
    raw.write_text(RAW)
    groups = read_stacks(raw, only=[])
    assert set(groups) == {"process 10, thread (10): MainThread", "process 11, thread (11): MainThread"}
    assert sum(groups["process 10, thread (10): MainThread"].values()) == 100
    assert dict(groups["process 11, thread (11): MainThread"]) == {("finish (finishing.py)",): 20}

    only_run = read_stacks(raw, only=["run (vismtl/wsi/engine.py"])  # set-up left out
    assert list(only_run) == ["process 10, thread (10): MainThread"]
    lines = summarise(only_run, top=5, min_share=0.0)
    assert "   all within: run (vismtl/wsi/engine.py)" in lines  # lines 138 and 140: one function
    assert "     75.0 %  forward (model.py)" in lines and "     25.0 %  stitch (stitch.py)" in lines


def test_each_process_sums_its_threads(tmp_path):
    writer = ENGINE.replace("thread (10): MainThread", "thread (12): writer_0")
    raw = tmp_path / "profile.raw"
    raw.write_text(RAW + f"{writer}finish_chunk (stitcher.py:9) 30\n")
    lines = summarise(read_stacks(raw, only=[]), top=5, min_share=0.5)
    assert lines[1] == "   process 10: 130 samples in 2 threads (86.7 %)"
    assert lines[2] == "   process 11: 20 samples in 1 threads (13.3 %)"
