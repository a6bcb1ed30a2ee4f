"""What every command-line tool shares: logging set up per rank, user errors as one line."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from vismtl.config import ConfigError
from vismtl.data.layout import DatasetLayoutError
from vismtl.engine.checkpoint import CheckpointError
from vismtl.io import out_of_space

# Errors caused by what the user passed: shown as one "error: ..." line, exit status 2.
USER_ERRORS = (ConfigError, CheckpointError, DatasetLayoutError, FileNotFoundError)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's time limit, ``kill``), ending a tool as Ctrl-C does."""


@contextlib.contextmanager
def terminated_as_interrupted() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread meanwhile, so that a tool ends as on
    Ctrl-C: the work handed to its writers is finished (a slide's chunks in flight, which a
    resume then need not compute again) and it says how to go on. By default SIGTERM ends
    Python at once, silently; schedulers send it some time before SIGKILL (SLURM: 30 s)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_tool(main: Callable[[], int]) -> int:
    """A tool's ``main()``, its exit status. Output piped to a reader that stopped early (``| head``)
    ends the tool quietly with status 141, as SIGPIPE ends other Unix tools, not with a traceback."""
    try:
        status = main()
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at nothing first (the signal module's advice)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def run_command(command: Callable[[], object], interrupted: str = "") -> int:
    """Run ``command`` with INFO logging on rank 0 (warnings elsewhere). Exit status 0; 2 on a user
    error; 1 on a full disk or a diverged training; 130 on Ctrl-C and 143 on SIGTERM. Each is one
    line, not a traceback; after a full disk, Ctrl-C or SIGTERM, ``interrupted`` says how to go on."""
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(levelname)s %(message)s")
    then = f": {interrupted}" if interrupted else ""
    try:
        with terminated_as_interrupted():
            command()
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # training diverged: the message says what to change
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"\nterminated (SIGTERM){then}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"\ninterrupted{then}", file=sys.stderr)
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
