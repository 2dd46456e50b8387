"""Seconds since this process started, start-up (interpreter, imports) included.

Why not a timer started in train.py: importing torch and friends takes seconds before any line
of train.py runs, and "time to first step" and a run's wall time must include it. Linux exposes the
process start in /proc; elsewhere the clock starts at this module's import.
"""

from __future__ import annotations

import os
import time

_IMPORTED = time.monotonic()


def _age_from_proc() -> float | None:
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            # Field 22 (starttime, clock ticks since boot) comes after the ')' closing the name.
            fields = stat.read().rsplit(")", 1)[1].split()
            started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
            return float(uptime.read().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None


_AGE_AT_IMPORT = _age_from_proc()


def seconds_since_process_start() -> float:
    base = _AGE_AT_IMPORT if _AGE_AT_IMPORT is not None else 0.0
    return base + time.monotonic() - _IMPORTED
