"""Training logs: one JSON object per line in ``log.jsonl``, mirrored to TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vismtl.io import atomic_open


class RunLogger:
    """Appends records to ``work_dir/log.jsonl`` and ``work_dir/tensorboard`` (main rank only).

    Args:
        work_dir: the run's folder.
        enabled: False on ranks other than 0.
        tensorboard: also write TensorBoard event files.
    """

    def __init__(self, work_dir: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.path = Path(work_dir) / "log.jsonl"
        self.enabled = enabled
        self.writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import, only when used

            self.writer = SummaryWriter(str(Path(work_dir) / "tensorboard"))

    def truncate_after(self, iteration: int) -> None:
        """Drop records past ``iteration`` (and a half-written last line) before a resume."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("iter", 0) <= iteration:
                kept.append(line)
        with atomic_open(self.path, "w") as handle:
            handle.write("".join(line + "\n" for line in kept))

    def log(self, record: dict[str, Any], prefix: str = "train") -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            step = record.get("iter", 0)
            for key, value in _flatten(record).items():
                if key != "iter" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{prefix}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat
