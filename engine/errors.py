"""User errors: bad config, CLI, checkpoint or data. Reported as one line, never a traceback.

Why a dedicated type: a traceback for a typo in a config key buries the one fact the user needs.
Anything raised as `UserError` is printed as `error: <message>` and the process exits with code 2;
every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

USER_ERROR_EXIT_CODE = 2


class UserError(Exception):
    """A problem with the user's input, explained in one line."""


def run_reporting_user_errors(main: Callable[[], int | None]) -> None:
    """Run `main`; turn a UserError into one line on stderr (rank 0 only) and exit code 2."""
    try:
        code = main()
    except UserError as error:
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR_EXIT_CODE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
