"""The model's clock: its seconds and the gaps between its calls, and whose lateness they were."""

import time

import pytest
import torch

from vismtl.wsi.batching import ModelClock
from wsi_helpers import gpu_cycles


def test_on_the_cpu_the_gaps_are_the_thread_s_time_between_calls():
    clock = ModelClock(torch.device("cpu"))
    for pause in (0.0, 0.05, 0.1):
        time.sleep(pause)  # before the first call: not a gap
        with clock:
            time.sleep(0.02)
    seconds = clock.seconds()
    gap, late = clock.gaps()
    assert 0.06 <= seconds < 0.2
    assert 0.15 <= gap < 0.3 and late == gap


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_the_gaps_are_the_device_s_and_late_only_where_the_thread_came_after_it():
    """Call 2 begins 0.2 s after call 1 ended on the device (the thread late); call 3 begins at once,
    but behind 0.2 s of other work queued on the stream (the thread early): 0.4 s of gaps, half late."""
    cycles = gpu_cycles(0.2)
    clock, x = ModelClock(torch.device("cuda")), torch.ones(1024, 1024, device="cuda")
    with clock:
        x @ x
    torch.cuda.synchronize()
    time.sleep(0.2)
    with clock:
        x @ x
    torch.cuda._sleep(cycles)  # 0.2 s of other work queued before call 3
    with clock:
        x @ x
    clock.seconds()
    gap, late = clock.gaps()
    assert 0.35 < gap < 0.6 and 0.15 < late < 0.3, (gap, late)
