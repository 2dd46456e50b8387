"""The one way a process of the template ends on an error: one line from one rank, then exit.

Why here and nowhere else: train.py and every tool end the same way, and a fault of a running job
must end differently from a config typo (at once, see below). Anything raised as `UserError` is
printed as `error: <message>` by its reporting rank only (N processes failing together print it
once) and the process exits with the error's code; every other exception is a bug and keeps
its traceback.

Every entry point also freezes what its imports created before it starts (`gc.freeze`): torch and
its companions leave about 300,000 objects that live until exit anyway, and the interpreter's
teardown otherwise walks them all, about 1 s per process on a 2-core machine, paid once more by
each rank of a run and by every short run (tests, benchmarks, verify) after the work is done.
Objects the run creates are collected as usual while it runs; after a normal end everything is
frozen too, and the OS takes the memory back without a last collection.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from foundation.errors import UserError
from foundation.process import process_rank


def exit_with(error: UserError) -> NoReturn:
    """Print the error's line (from its reporting rank) and end the process with its code.

    A fault of a running job (`exit_at_once`) may leave collectives pending on a peer that is
    gone; the normal interpreter teardown would wait on them (gloo joins its threads), so such a
    process ends at once, after the line is printed and every file was written and closed."""
    if process_rank() == error.reporting_rank:
        print(error.line, file=sys.stderr, flush=True)
    if error.exit_at_once:
        sys.stdout.flush()
        os._exit(error.exit_code)
    sys.exit(error.exit_code)


def run_reporting_user_errors(main: Callable[[], int | None]) -> None:
    """Run `main`; a UserError becomes one line and its exit code, Ctrl-C exit code 130."""
    gc.freeze()  # the imported modules' objects: out of every collection, the one at exit too
    try:
        code = main()
    except UserError as error:
        exit_with(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    gc.freeze()  # and what the run imported or left behind: the OS frees it faster at exit
    sys.exit(code or 0)
