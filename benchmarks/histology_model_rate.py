"""The histology quickstart model's own rate: tiles per second by batch size, float32 or bfloat16
autocast, NCHW or channels-last, activations included (what the slide engine must keep up with).

    python benchmarks/histology_model_rate.py [--histology-checkpoint CKPT] [--batches 8 16 64 256] [--repeats 4]

Random uint8 tiles of 320 x 320 (the engine's 256 px tiles with 32 px of context), on the GPU
when there is one; the median of ``--repeats`` timed calls after two warm-up calls (cuDNN's
autotuning on).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_description, measure, quickstart_histology  # noqa: E402


def seconds_per_call(model, tasks, images: torch.Tensor, amp: bool, repeats: int, warmup: int = 2) -> float:
    """Median seconds of one call of the model and its activations on ``images`` (after ``warmup``
    calls: cuDNN's autotuning, allocations)."""

    def call() -> None:
        for name, value in model(images).items():
            tasks[name].activate(value)

    with torch.inference_mode(), torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        return statistics.median(measure(call, repeats, warmup))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--histology-checkpoint", help="weights (default: random; the rate does not depend on them)")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 64, 256])
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    model, tasks = quickstart_histology(args.histology_checkpoint)
    model = model.to(device)
    print(f"device: {device_description()}; tiles 320 x 320; median of {args.repeats} calls")
    print(f"{'layout':14s} {'precision':9s} {'batch':>6s} {'tiles/s':>9s} {'vs NCHW fp32':>13s}")
    base: dict[int, float] = {}
    for layout in ("NCHW", "channels-last"):
        if layout == "channels-last":
            model = model.to(memory_format=torch.channels_last)
        for amp in (False, True):
            for batch in args.batches:
                images = torch.randint(0, 256, (batch, 3, 320, 320), dtype=torch.uint8, device=device)
                if layout == "channels-last":
                    images = images.contiguous(memory_format=torch.channels_last)
                rate = batch / seconds_per_call(model, tasks, images, amp, args.repeats)
                base.setdefault(batch, rate)
                precision = "bf16" if amp else "fp32"
                print(f"{layout:14s} {precision:9s} {batch:6d} {rate:9.1f} {rate / base[batch]:12.2f}x")


if __name__ == "__main__":
    main()
