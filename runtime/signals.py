"""SIGTERM, SIGINT and SIGHUP: stop at the next step boundary with a checkpoint; a second one
exits now.

Why not the default (die at once): SLURM sends SIGTERM before it preempts a job and torchrun
forwards it (and Ctrl-C) to every worker, then kills them 30 s later; an SSH session that closes
sends SIGHUP (torchrun forwards that too). Dying at once loses everything since the last
checkpoint and leaves the manifest saying `running`. A process started under `nohup` keeps
ignoring SIGHUP: outliving the terminal is what its user asked for. The handler only records the signal; the trainer's vote
(runtime/vote.py) makes every rank stop at the same step, after one checkpoint.

Why a second signal exits at once: a user who presses Ctrl-C twice means it, and a hung
checkpoint write must not make the job unkillable short of SIGKILL. But not a second signal
that comes within `REPEAT_WINDOW_S` of the first: at a job's time limit SLURM sends SIGTERM twice,
about 15 ms apart (the time-limit kill, then the job's terminate); taken as "exit now", it lost
everything since the last checkpoint. A repeat that close is the same request.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
REPEAT_WINDOW_S = 1.0  # a second signal sooner than this is the first one repeated


class StopSignals:
    """Installs the handlers in this process; `received` is the first signal number, or 0."""

    def __init__(self, announce: bool) -> None:
        self.received = 0
        self.received_at = 0.0
        self.announce = announce  # one rank prints
        self._owner = os.getpid()
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for number in STOP_SIGNALS:
            if number == signal.SIGHUP and signal.getsignal(number) is signal.SIG_IGN:
                continue  # `nohup`: the user asked the run to outlive the terminal
            self._previous[number] = signal.signal(number, self._handle)

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def quietly(self) -> None:
        """The run is already stopping on a fault: a signal now (torchrun stopping the other
        ranks) is recorded without a word, so the fault's line is written before the exit; a
        second one still exits at once."""
        self.announce = False

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if os.getpid() != self._owner:
            return  # a DataLoader worker inherited the handler: its parent decides
        name = signal.Signals(number).name
        now = time.monotonic()
        if self.received:
            if now - self.received_at < REPEAT_WINDOW_S:
                return  # the same request repeated (SLURM's time limit sends SIGTERM twice)
            print(f"second {name}: exiting now, without a checkpoint", file=sys.stderr, flush=True)
            os._exit(128 + number)
        self.received, self.received_at = number, now
        if self.announce:
            print(
                f"received {name}: stopping after this step with a checkpoint "
                f"({name} again, a second later or more, exits at once)",
                file=sys.stderr,
                flush=True,
            )
