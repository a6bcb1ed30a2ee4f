"""Shared fixtures: the repository root, the tiny config and the shared sample data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "tests" / "configs" / "tiny_scenes.py"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests run on 2 cores next to loader workers and subprocesses: one thread each is fastest.
torch.set_num_threads(1)

# Triton kernels run on the CPU in the interpreter; it must be chosen before any kernel is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Where the kernel tests put their tensors: the GPU when there is one, so they check the compiled kernels.
KERNEL_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def tiny_config() -> Path:
    return TINY_CONFIG


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared sample data not found at {SHARED_DATA}")
    return SHARED_DATA


def subprocess_env() -> dict[str, str]:
    """Environment for tools run as subprocesses: one thread, no progress-bar noise."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env
