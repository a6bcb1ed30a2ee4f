"""Checkpoints: atomic writes, safe loading, clear errors for the wrong file.

A training checkpoint holds the model, optimizer and scheduler states, the iteration, the
RNG states of every generator the loop uses, and the resolved config. It is written to a
temporary file in the same folder, flushed to disk and renamed, so a crash never leaves a
truncated ``latest.pth``. Loading uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vismtl.io import atomic_open, naming


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the model; the message says why."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over it."""
    try:
        with atomic_open(path, "wb") as handle:
            torch.save(obj, handle)
    except RuntimeError as err:
        # torch.save reports a failed write (a full disk) as an "enforce fail" of its own; the
        # OSError behind it says what happened
        if isinstance(err.__context__, OSError) and (named := naming(err.__context__, path)):
            raise named from err
        raise


def atomic_link(source: Path, target: Path) -> None:
    """Make ``target`` a hard link to (or, where links fail, a copy of) ``source``, atomically."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's global generators (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file; a missing, truncated or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(_unreadable(path, err)) from err
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict of states")
    return dict(checkpoint)


def _unreadable(path: Path, err: Exception) -> str:
    """Why ``torch.load`` failed, in a line: torch's own message advises ``weights_only=False``
    first, also for a file that is no checkpoint at all."""
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    if unsafe:
        return (
            f"cannot read checkpoint {path}: it holds Python objects besides weights ({unsafe[1]}), which vismtl "
            "does not load (unpickling them can run any code); if you trust the file, save its weights alone: "
            f'python -c "import torch; c = torch.load({str(path)!r}, weights_only=False); '
            "torch.save(c.get('model', c.get('state_dict', c)), 'weights.pth')\""
        )
    said = (str(err).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")[:200]  # its first sentence
    return (
        f"cannot read checkpoint {path}: the file is corrupt, truncated or not a PyTorch checkpoint "
        f"({type(err).__name__}: {said})"
    )


def model_state_from(checkpoint: Mapping[str, Any], path: str | Path) -> Mapping[str, torch.Tensor]:
    """The model weights of a checkpoint (vismtl's ``{"model": ...}`` or a bare state dict)."""
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} has no model weights (expected a 'model' state dict)")
    return state


def load_model_weights(model: nn.Module, checkpoint: Mapping[str, Any], path: str | Path) -> None:
    """Load weights, refusing a checkpoint made for another architecture with the differences named."""
    state = model_state_from(checkpoint, path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected weights (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:2])})")
        made_with = checkpoint.get("model_config")
        hint = f"; it was made with model = {made_with}" if made_with else ""
        raise CheckpointError(
            f"checkpoint {path} was made for another architecture than this config's model: {', '.join(problems)}{hint}"
        )
    model.load_state_dict(state)
