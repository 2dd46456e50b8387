"""User errors: bad config, CLI, checkpoint or data. Reported as one line, never a traceback.

Why a dedicated type: a traceback for a typo in a config key buries the one fact the user needs.
Anything raised as `UserError` is printed as `error: <message>` by one rank and the process exits
with the error's code (2 for bad input; see `engine.faults` for the faults of a running job);
every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

USER_ERROR_EXIT_CODE = 2

# DataLoader re-raises an exception from a worker process as `type(error)(text)`, where text is
# "Caught X in DataLoader worker process N.\nOriginal Traceback ...\n<module>.X: <message>".
_WORKER_TRACEBACK = re.compile(r"Original Traceback.*\n(?:[\w.]+: )?(?P<message>[^\n]+)\n?\Z", re.S)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class UserError(Exception):
    """A problem with the user's input, explained in one line.

    `exit_code` is the process's exit status; `reporting_rank` is the one rank that prints the
    line, so that N processes failing together do not print it N times."""

    exit_code = USER_ERROR_EXIT_CODE
    # A fault of a running job may leave collectives pending on a peer that is gone; the normal
    # interpreter teardown would wait on them (gloo joins its threads), so such errors end the
    # process at once, after the line is printed and every file was written and closed.
    exit_at_once = False

    def __init__(self, message: str, reporting_rank: int = 0) -> None:
        wrapped = _WORKER_TRACEBACK.search(message)
        super().__init__(wrapped.group("message") if wrapped else message)
        self.reporting_rank = reporting_rank


def run_reporting_user_errors(main: Callable[[], int | None]) -> None:
    """Run `main`; turn a UserError into one line on stderr (from its reporting rank) and its
    exit code."""
    try:
        code = main()
    except UserError as error:
        if int(os.environ.get("RANK", "0")) == error.reporting_rank:
            print(f"error: {error}", file=sys.stderr, flush=True)
        if error.exit_at_once:
            sys.stdout.flush()
            os._exit(error.exit_code)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
