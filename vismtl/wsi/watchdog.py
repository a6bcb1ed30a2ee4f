"""A worker process's watchdog: it exits when the engine's process is gone."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading


def watch_parent() -> None:
    """In a worker process: exit when the engine's process is gone (SIGKILL, out of memory)
    instead of waiting for work forever."""
    threading.Thread(target=_exit_with_parent, name="vismtl-watchdog", daemon=True).start()


def _exit_with_parent() -> None:
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(1)
