"""How much a busy Python thread holds back a thread that launches many small PyTorch ops.

    python benchmarks/gil_convoy.py [--intervals 5 1 0.5 0.2] [--forwards 10]

On a GPU the slide engine's model thread launches every kernel from Python, and each PyTorch
call lets go of the GIL and takes it back. If another thread of the process is running Python
meanwhile, taking the GIL back waits for that thread to give it up: at the latest after the
interpreter's switch interval (``sys.setswitchinterval``, 5 ms by default), for every call. A
thread inside one long C call that holds the GIL (JSON encoding, pickling) gives it up only when
that call returns.

This runs the histology quickstart model on one 16 x 16 tile with one PyTorch thread (its ops
take microseconds on the CPU, about what launching a kernel takes) alone, then beside a thread
that runs Python (a loop building a dict of strings) or one long C call after another (encoding
a list of dicts as JSON), at each switch interval. Medians of ``--forwards`` forwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_description, quickstart_histology  # noqa: E402


def python_loop(stop: threading.Event) -> None:
    while not stop.is_set():
        {i: f"{i * 0.5:.3f}" for i in range(10_000)}


def long_c_calls(stop: threading.Event) -> None:
    rows = [{"id": i, "xy": [i * 0.5, i * 0.25], "name": "nucleus"} for i in range(2_000)]
    while not stop.is_set():
        json.dumps(rows)


def forward_ms(model: torch.nn.Module, tile: torch.Tensor, count: int) -> float:
    seconds = []
    with torch.inference_mode():
        for _ in range(count):
            started = time.perf_counter()
            model(tile)
            seconds.append(time.perf_counter() - started)
    return 1000 * statistics.median(seconds)


def beside(neighbour, model: torch.nn.Module, tile: torch.Tensor, count: int) -> float:
    stop = threading.Event()
    thread = threading.Thread(target=neighbour, args=(stop,), daemon=True)
    thread.start()
    time.sleep(0.05)  # running before the first forward
    try:
        return forward_ms(model, tile, count)
    finally:
        stop.set()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intervals", type=float, nargs="+", default=[5.0, 1.0, 0.5, 0.2], help="ms")
    parser.add_argument("--forwards", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, _ = quickstart_histology()
    tile = torch.zeros((1, 3, 16, 16), dtype=torch.uint8)
    forward_ms(model, tile, 3)  # warm-up
    default = sys.getswitchinterval()
    neighbours = {"a Python loop": python_loop, "long C calls (json.dumps)": long_c_calls}
    print(f"device: {device_description()}; torch {torch.__version__}; Python {sys.version.split()[0]}")
    print(f"{'beside':28s} {'switch interval':>15s} {'forward ms':>11s} {'vs alone':>9s}")
    try:
        alone = forward_ms(model, tile, args.forwards)
        print(f"{'nothing':28s} {'':>15s} {alone:11.1f} {1.0:8.1f}x")
        for name, neighbour in neighbours.items():
            for interval in args.intervals:
                sys.setswitchinterval(interval / 1000)
                held = beside(neighbour, model, tile, args.forwards)
                print(f"{name:28s} {f'{interval:g} ms':>15s} {held:11.1f} {held / alone:8.1f}x")
    finally:
        sys.setswitchinterval(default)


if __name__ == "__main__":
    main()
