"""Shared fixtures: the repository root, the tiny config and the shared sample data."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
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


HOLD_FOLDER = """
import sys
from pathlib import Path
from vismtl.config import ConfigError
from vismtl.io import hold_folder
try:
    lock = hold_folder(Path(sys.argv[1]), "--out-dir")
except ConfigError as err:
    print(err, flush=True)
    sys.exit(1)
print("held", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def folder_held_by_another_run(folder: Path) -> Iterator[int]:
    """``folder``'s run lock (vismtl.io.hold_folder) taken by another process, killed with SIGKILL
    at the end; yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=subprocess_env(),
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def lock_refused_to_another_process(folder: Path) -> str:
    """What another process taking ``folder``'s run lock is told: the refusal's message ("" if it got it)."""
    command = [sys.executable, "-c", HOLD_FOLDER, str(folder)]
    tried = subprocess.run(command, input="", capture_output=True, text=True, env=subprocess_env(), timeout=60)
    return "" if tried.stdout == "held\n" else tried.stdout.strip()
