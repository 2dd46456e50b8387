"""Waiting for a child process, and saying where it hung if it does.

Why a library piece: a hang in a log that says only "timed out after 300 s" cannot be fixed.
torchrun starts each worker in a session of its own, so its workers are found through /proc,
not the process group; with PYTHONFAULTHANDLER set, each Python process prints every thread's
stack on SIGABRT, and the workers' stderr is the launcher's, which the caller captures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import IO

from runtime.provenance import REPO_ROOT

STACK_DUMP_GRACE_S = 30.0  # how long the hung processes get to print their stacks


class Hung(AssertionError):
    """A process outlived its timeout; the message holds its output's tail and every stack."""


def run_process(
    command: list[str],
    env: dict[str, str],
    timeout: float | None = None,
    log: IO[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `command` from the repository root; its output is captured (or goes to `log`).
    A run past `timeout` is stopped with SIGABRT (stacks), then SIGKILL, and raises `Hung`."""
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=log if log is not None else subprocess.PIPE,
        stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
        text=True,
    )
    stdout, stderr = wait_or_dump_stacks(process, timeout)
    return subprocess.CompletedProcess(command, process.returncode, stdout or "", stderr or "")


def wait_or_dump_stacks(
    process: subprocess.Popen[str], timeout: float | None
) -> tuple[str | None, str | None]:
    """Wait for `process`; on a hang, SIGABRT it and its descendants and raise with their stacks."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung = [*descendants(process.pid), process.pid]  # workers first, then the launcher
        signal_all(hung, signal.SIGABRT)
        try:
            stdout, stderr = process.communicate(timeout=STACK_DUMP_GRACE_S)
        except subprocess.TimeoutExpired:
            signal_all([*descendants(process.pid), process.pid], signal.SIGKILL)
            stdout, stderr = process.communicate()
        raise Hung(
            f"hung for {timeout:.0f}s: {' '.join(map(str, process.args))}\n"  # type: ignore[arg-type]
            f"stdout tail:\n{(stdout or '')[-2000:]}\n"
            f"stacks and stderr tail:\n{(stderr or '')[-12000:]}"
        ) from None


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children before grandchildren (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    found: list[int] = []
    frontier = [pid]
    while frontier:
        below = [child for parent in frontier for child in children.get(parent, [])]
        found.extend(below)
        frontier = below
    return found
