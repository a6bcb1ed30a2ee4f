"""What every command-line tool shares: logging set up per rank, user errors as one line."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from vismtl.config import ConfigError
from vismtl.data.layout import DatasetLayoutError
from vismtl.engine.checkpoint import CheckpointError
from vismtl.io import out_of_space

# Errors caused by what the user passed: shown as one "error: ..." line, exit status 2.
USER_ERRORS = (ConfigError, CheckpointError, DatasetLayoutError, FileNotFoundError)


def run_command(command: Callable[[], object], interrupted: str = "") -> int:
    """Run ``command`` with INFO logging on rank 0 (warnings elsewhere); exit status 0, 2 on a user
    error, 1 on a full disk, 130 on Ctrl-C (one line, not a traceback; after the last two,
    ``interrupted`` says how to go on)."""
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
    except OSError as err:
        if not out_of_space(err):
            raise
        where = f" writing {err.filename}" if err.filename else ""
        print(
            f"error: {err.strerror}{where}: free some space there" + (f"; {interrupted}" if interrupted else ""),
            file=sys.stderr,
        )
        return 1
    return 0
