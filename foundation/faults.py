"""The faults that stop a running job early, each reported as one line by one rank.

Why a type per fault: the run session (runtime/session.py) records the fault in the manifest
(`kind`), adds where to continue from (the newest complete checkpoint) and exits with the
fault's code; the user reads one line that names the cause and where it happened, never a
traceback from N processes.

| fault              | raised by                 | all ranks agree                      | exit       |
|--------------------|---------------------------|--------------------------------------|------------|
| NonFiniteLoss      | the health vote           | yes: the vote is a collective        | 1          |
| NonFiniteState     | the health vote, or the   | yes: the vote is a collective        | 1          |
|                    | checkpoint owner's check  |                                      |            |
| OutputWriteFailed  | the recorder (rank 0)     | yes: the next vote carries the flag  | 1          |
| Interrupted        | the session, on a signal  | yes: the next vote carries the flag  | 128 + sig  |
| PeerUnresponsive   | a collective that failed  | no: the peer is gone; a roll call    | 1          |
|                    |                           | through the store names it           |            |
| PeerFailed         | a collective that failed  | no: the failed rank posted its fault | 1          |
| DataFileError      | a dataset, on one rank    | no: that rank posts it for the rest  | 1          |
| NondeterministicOp | torch, under the debug    | yes: every rank runs the same op     | 2          |
|                    | profile                   |                                      |            |

They live in the foundation because the layers that raise them sit below the runtime that
handles them (a dataset raises DataFileError).
"""

from __future__ import annotations

import signal

from foundation.errors import USER_ERROR_EXIT_CODE, UserError
from foundation.process import process_rank

FAULT_EXIT_CODE = 1


class TrainingFault(UserError):
    """A running job stopped early; `kind` is what the manifest records."""

    kind = "fault"
    exit_code = FAULT_EXIT_CODE
    exit_at_once = True
    resumable = True  # whether the line ends with where to continue from

    def add_hint(self, hint: str) -> None:
        """Complete the line with where to continue from (known to the recorder, not the
        code that raised it)."""
        self.args = (f"{self}; {hint}",)


class NonFiniteLoss(TrainingFault):
    """The loss or the gradients stopped being finite; nothing after that step is saved."""

    kind = "non_finite_loss"


class NonFiniteState(NonFiniteLoss):
    """Parameters, buffers (BatchNorm statistics) or optimizer state stopped being finite while
    the loss still was; nothing from that step on is saved."""

    kind = "non_finite_state"


class OutputWriteFailed(TrainingFault):
    """A checkpoint or an output file could not be written (full disk, quota, file size limit)."""

    kind = "write_error"


class Interrupted(TrainingFault):
    """SIGTERM, SIGINT or SIGHUP: every rank stopped at the same step boundary after a checkpoint."""

    kind = "interrupted"

    def __init__(self, message: str, reporting_rank: int = 0, signal_number: int = 0) -> None:
        super().__init__(message, reporting_rank)
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number if signal_number else FAULT_EXIT_CODE

    @property
    def line(self) -> str:
        """A stop the user asked for is not an error: `stopped by SIGINT after step 5 ...`."""
        return str(self)

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
    `type(error)(text)` (see `foundation.errors`). Only the rank that read the file knows of it, so
    that rank reports it (RANK, as torchrun set it; a DataLoader worker inherits it)."""

    kind = "data_file"

    def __init__(self, message: str) -> None:
        super().__init__(message, reporting_rank=process_rank())


class NondeterministicOp(TrainingFault):
    """The debug profile met an op without a deterministic implementation (torch raised).

    Bad input rather than a failure of the job: the fix is another profile or another op, so
    its exit code is the user-error code and its line says no word about resuming."""

    kind = "nondeterministic_op"
    exit_code = USER_ERROR_EXIT_CODE
    resumable = False
