"""Training and inference images/s of a config's model (the quickstart model by default).

    python benchmarks/train_throughput.py [--configs CFG ...] [--batch-size 8] [--repeats 5]

Rows per config (default: the quickstart HPS model and its TaskExpert version; TaskExpert
with the reference gating and, on a GPU, the fused Triton gating): a full training step
(forward, loss, backward, optimizer) in float32 and with bf16 autocast, inference in both;
then the data pipeline (samples/s on one core) so one can see whether loading keeps up.
Ratios are against the first row of each group (train, inference), measured in the same
run. Correctness is checked before timing: the bf16 outputs must be close to the float32
ones and the loss must be finite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Row, measure, print_table  # noqa: E402
from vismtl.config import call_with_config, load_config  # noqa: E402
from vismtl.data import build_dataset  # noqa: E402
from vismtl.engine.losses import multitask_loss  # noqa: E402
from vismtl.engine.optim import build_optimizer  # noqa: E402
from vismtl.models import build_model  # noqa: E402
from vismtl.tasks import build_tasks  # noqa: E402


def make_batch(dataset, batch_size: int) -> dict:
    items = [dataset[(i, i)] for i in range(batch_size)]
    batch = {k: torch.stack([item[k] for item in items]) for k in items[0] if k != "meta"}
    return batch


def check_bf16(model, batch) -> None:
    model.eval()
    with torch.no_grad():
        ref = model(batch["image"])
        with torch.autocast("cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16):
            low = model(batch["image"])
    for name, value in ref.items():
        err = (low[name].float() - value).norm() / value.norm().clamp(min=1e-6)
        if err > 0.1:
            raise SystemExit(f"bf16 output of {name} is off by {err:.3f} relative: refusing to time it")
    model.train()


def model_rows(config: str, label: str, args, device, decoder_options: dict | None = None) -> list[Row]:
    """Train-step and inference rows of one config's model (fp32 and bf16 autocast)."""
    cfg = load_config(config, {f"model.decoder.{k}": v for k, v in (decoder_options or {}).items()})
    tasks = build_tasks(cfg.tasks)
    torch.manual_seed(0)
    model = build_model(cfg.model, tasks).to(device)
    optimizer = call_with_config(build_optimizer, cfg.get("optimizer"), "optimizer", model=model)
    dataset = build_dataset(cfg.data.train, tasks, "data.train")
    batch = {k: v.to(device) for k, v in make_batch(dataset, args.batch_size).items()}
    check_bf16(model, batch)

    def train_steps(amp: bool):
        def run():
            for _ in range(args.steps):
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    outputs = model(batch["image"])
                loss = multitask_loss(outputs, batch, tasks).total
                if not torch.isfinite(loss):
                    raise SystemExit("non-finite loss: refusing to report a speed")
                loss.backward()
                optimizer.step()

        return run

    def infer(amp: bool):
        @torch.no_grad()
        def run():
            model.eval()
            for _ in range(args.steps):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    model(batch["image"])
            model.train()

        return run

    images = args.batch_size * args.steps
    return [
        Row(f"{label}: train step, float32", measure(train_steps(False), args.repeats), images, "train"),
        Row(f"{label}: train step, bf16 autocast", measure(train_steps(True), args.repeats), images, "train"),
        Row(f"{label}: inference, float32", measure(infer(False), args.repeats), images, "infer"),
        Row(f"{label}: inference, bf16 autocast", measure(infer(True), args.repeats), images, "infer"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs", nargs="+", default=["configs/quickstart.py", "configs/scenes/taskexpert_resnet18.py"]
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    rows = []
    for config in args.configs:
        label = Path(config).stem
        if load_config(config).model.decoder.type == "taskexpert":
            rows += model_rows(config, f"{label} (reference gating)", args, device, {"gating_impl": "reference"})
            if device.type == "cuda":  # the fused Triton op runs on GPUs only
                rows += model_rows(config, f"{label} (fused gating)", args, device, {"gating_impl": "triton"})
        else:
            rows += model_rows(config, label, args, device)
    cfg = load_config(args.configs[0])
    dataset = build_dataset(cfg.data.train, build_tasks(cfg.tasks), "data.train")
    n = 64
    rows.append(
        Row(
            "data: generate + augment (1 process)",
            measure(lambda: [dataset[(i, i)] for i in range(n)], args.repeats),
            n,
            "data",
        )
    )
    print(f"batch {args.batch_size}; ratios against the first row of each group (train, inference, data)")
    print_table(rows, unit="images/s")


if __name__ == "__main__":
    main()
