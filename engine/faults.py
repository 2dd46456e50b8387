"""The faults that stop a running job early, each reported as one line by one rank.

Why a type per fault: train.py records the fault in the manifest (`kind`), adds where to
continue from (the newest complete checkpoint) and exits with the fault's code; the user reads
one line that names the cause and where it happened, never a traceback from N processes.

| fault              | raised by                 | all ranks agree                      | exit       |
|--------------------|---------------------------|--------------------------------------|------------|
| NonFiniteLoss      | the trainer's health vote | yes: the vote is a collective        | 1          |
| OutputWriteFailed  | the recorder (rank 0)     | yes: the next vote carries the flag  | 1          |
| Interrupted        | the trainer, on a signal  | yes: the next vote carries the flag  | 128 + sig  |
| PeerUnresponsive   | a collective that failed  | no: the peer is gone; a roll call    | 1          |
|                    |                           | through the store names it           |            |
| PeerFailed         | a collective that failed  | no: the failed rank posted its fault | 1          |
| DataFileError      | a dataset, on one rank    | no: that rank posts it for the rest  | 1          |
"""

from __future__ import annotations

import os
import signal

from engine.errors import UserError

FAULT_EXIT_CODE = 1


class TrainingFault(UserError):
    """A running job stopped early; `kind` is what the manifest records."""

    kind = "fault"
    exit_code = FAULT_EXIT_CODE
    exit_at_once = True

    def add_hint(self, hint: str) -> None:
        """Complete the line with where to continue from (known to the recorder, not the
        code that raised it)."""
        self.args = (f"{self}; {hint}",)


class NonFiniteLoss(TrainingFault):
    """The loss or the gradients stopped being finite; nothing after that step is saved."""

    kind = "non_finite_loss"


class OutputWriteFailed(TrainingFault):
    """A checkpoint or an output file could not be written (full disk, quota, file size limit)."""

    kind = "write_error"


class Interrupted(TrainingFault):
    """SIGTERM or SIGINT: every rank stopped at the same step boundary after a checkpoint."""

    kind = "interrupted"

    def __init__(self, message: str, reporting_rank: int = 0, signal_number: int = 0) -> None:
        super().__init__(message, reporting_rank)
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number if signal_number else FAULT_EXIT_CODE

    @classmethod
    def by(cls, signal_number: int, where: str) -> Interrupted:
        name = signal.Signals(signal_number).name
        return cls(f"stopped by {name} after {where}", signal_number=signal_number)


class PeerUnresponsive(TrainingFault):
    """A collective did not complete: a rank stopped answering, died, or never joined."""

    kind = "collective_timeout"


class PeerFailed(TrainingFault):
    """Another rank stopped with a fault of its own and said so; that rank reports it."""

    kind = "peer_failed"


class DataFileError(TrainingFault):
    """A data file vanished or became unreadable while the job ran.

    Constructed from one message only: DataLoader re-raises a worker's exception as
    `type(error)(text)` (see `engine.errors`). Only the rank that read the file knows of it, so
    that rank reports it (RANK, as torchrun set it; a DataLoader worker inherits it)."""

    kind = "data_file"

    def __init__(self, message: str) -> None:
        super().__init__(message, reporting_rank=int(os.environ.get("RANK", "0")))
