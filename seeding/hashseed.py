"""PYTHONHASHSEED: the one seed that cannot be set from inside the process it affects.

`str`/`bytes` hashing is randomised per interpreter unless PYTHONHASHSEED is in the environment
*when the interpreter starts*; setting `os.environ` later changes only child processes. So the
launchers (Makefile, Dockerfile ENV, torchrun's inherited environment) set it, and this module only
checks what the running interpreter got and says so.
"""

from __future__ import annotations

import os
import sys

EXPECTED_HASH_SEED = "0"

# Read at import, before anything in this process can edit os.environ.
_AT_START = os.environ.get("PYTHONHASHSEED")


def hash_seed_status() -> dict[str, object]:
    """What this interpreter runs with, and whether it matches the launchers' value."""
    randomised = bool(sys.flags.hash_randomization)
    return {
        "PYTHONHASHSEED": _AT_START,
        "expected": EXPECTED_HASH_SEED,
        "hash_randomization": randomised,
        "ok": _AT_START == EXPECTED_HASH_SEED,
    }


def hash_seed_warning() -> str | None:
    """A one-line warning when the interpreter's string hashing is not the planned one."""
    status = hash_seed_status()
    if status["ok"]:
        return None
    found = "unset" if _AT_START is None else repr(_AT_START)
    return (
        f"PYTHONHASHSEED is {found}, expected {EXPECTED_HASH_SEED!r}: set-iteration order of strings "
        "may differ between runs; launch through `make` (or export PYTHONHASHSEED=0 before python)"
    )
