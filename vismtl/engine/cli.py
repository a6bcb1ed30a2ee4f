"""What every command-line tool shares: logging set up per rank, user errors as one line."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from vismtl.config import ConfigError
from vismtl.data.layout import DatasetLayoutError
from vismtl.engine.checkpoint import CheckpointError

# Errors caused by what the user passed: shown as one "error: ..." line, exit status 2.
USER_ERRORS = (ConfigError, CheckpointError, DatasetLayoutError, FileNotFoundError)


def run_command(command: Callable[[], object], interrupted: str = "") -> int:
    """Run ``command`` with INFO logging on rank 0 (warnings elsewhere); exit status 0, 2 on a user
    error, 130 on Ctrl-C (one line, ``interrupted`` saying how to go on, not a traceback)."""
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        command()
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted" + (f": {interrupted}" if interrupted else ""), file=sys.stderr)
        return 130
    return 0
