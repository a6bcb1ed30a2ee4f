"""The benchmark harness: repeated timing, medians, and a table with ratios to a baseline row."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Row:
    name: str
    seconds: list[float]  # one entry per timed repeat
    items: int  # items processed per repeat (images, samples, ...)
    group: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.items / self.median


def measure(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> list[float]:
    """Wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def device_description() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def print_table(rows: list[Row], unit: str = "items/s") -> str:
    """Median time, rate and the ratio to the first row of the same group."""
    baselines: dict[str, Row] = {}
    lines = [
        f"device: {device_description()}; torch {torch.__version__}",
        f"{'case':44s} {'median s':>10s} {'min s':>9s} {unit:>12s} {'vs baseline':>12s}",
    ]
    for row in rows:
        base = baselines.setdefault(row.group, row)
        ratio = base.median / row.median
        lines.append(f"{row.name:44s} {row.median:10.4f} {min(row.seconds):9.4f} {row.rate:12.1f} {ratio:11.2f}x")
    text = "\n".join(lines)
    print(text)
    return text


def copy_bandwidth(device: torch.device) -> float:
    """GB/s of a large device-to-device copy (read + write counted): the roofline for memory-bound ops."""
    source = torch.empty(64 * 2**20, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    seconds = sorted(measure(lambda: target.copy_(source), repeats=10, warmup=2))[5]
    return 2 * source.numel() * 4 / seconds / 1e9


def bandwidth_line(label: str, row: Row, baseline: Row, moved_bytes: int, bandwidth: float) -> str:
    """``label``, median ms, speed-up over ``baseline``, achieved GB/s and its share of ``bandwidth``."""
    rate = moved_bytes / row.median / 1e9
    return (
        f"{label} {row.median * 1e3:10.3f} {baseline.median / row.median:12.2f}x {rate:8.1f}"
        f" {100 * rate / bandwidth:9.1f}%"
    )


def quickstart_histology(checkpoint: str | Path | None = None) -> tuple[torch.nn.Module, dict]:
    """The histology quickstart model (``configs/cerberus/quickstart_tissue.py``) in eval mode and its
    tasks; random weights unless ``checkpoint`` is given (the WSI benchmarks' model). A checkpoint
    that is missing or of another model ends the benchmark with one line naming it."""
    from vismtl.config import load_config
    from vismtl.engine import checkpoint as ckpt
    from vismtl.models import build_model
    from vismtl.tasks import build_tasks

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "cerberus" / "quickstart_tissue.py")
    tasks = build_tasks(cfg.tasks)
    model = build_model(cfg.model, tasks).eval()
    if checkpoint:
        try:
            ckpt.load_model_weights(model, ckpt.load_checkpoint(checkpoint), checkpoint)
        except ckpt.CheckpointError as err:  # one line naming the file, not a traceback
            raise SystemExit(f"error: {err}") from None
    return model, tasks
