"""User errors: bad config, CLI, checkpoint or data. Reported as one line, never a traceback.

Why a dedicated type: a traceback for a typo in a config key buries the one fact the user needs.
Anything raised as `UserError` is printed as `error: <message>` by one rank and the process exits
with the error's code (2 for bad input; see `foundation.faults` for the faults of a running job);
every other exception is a bug and keeps its traceback. `foundation.exit` prints and exits.
"""

from __future__ import annotations

import re

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

    @property
    def line(self) -> str:
        """What the reporting rank prints."""
        return f"error: {self}"
