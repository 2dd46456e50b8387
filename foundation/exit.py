"""The one way a process of the template ends on an error: one line from one rank, then exit.

Why here and nowhere else: train.py and every tool end the same way, and a fault of a running job
must end differently from a config typo (at once, see below). Anything raised as `UserError` is
printed as `error: <message>` by its reporting rank only (N processes failing together print it
once) and the process exits with the error's code; every other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations

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
    try:
        code = main()
    except UserError as error:
        exit_with(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
