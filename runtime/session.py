"""One run's life around the trainer: signals, the vote, checkpoints, faults, the exit.

`RunSession` is the trainer's `StepBoundary` (training/events.py) and owns everything of a run
that is not computation:
- stop signals (runtime/signals.py): SIGTERM, SIGINT or SIGHUP make every rank checkpoint at the same
  step and stop;
- the vote after each step (runtime/vote.py): a non-finite loss, gradients or state, a signal,
  or rank 0's failed write stop every rank at the same step;
- the checkpoint owner (runtime/checkpoint/owner.py): when to save, and never a broken state;
- the nondeterministic ops the eval profile records, and the debug profile's refusal of them;
- a fault's one exit path: the manifest says what happened, the other ranks are told through
  the store, one rank prints one line, and the process ends with the fault's code;
- the order of leaving the process group (the trainer's DDP reducer first).

train.py uses it as: `with session.running(): trainer.fit()` inside one try / except / else,
`session.exit_on(fault, ...)` on a fault and `session.finish(...)` otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NoReturn

from foundation.exit import exit_with
from foundation.faults import Interrupted, NondeterministicOp, TrainingFault
from foundation.process import next_commands
from runtime.checkpoint.owner import Checkpointer
from runtime.process_group import ProcessGroup
from runtime.recorder import RunRecorder
from runtime.signals import StopSignals
from runtime.vote import HealthVote
from training.determinism import NondeterminismRecorder, nondeterministic_op_in
from training.events import Position, Stateful
from training.health import NonFiniteWatch
from training.trainer import Trainer, TrainerConfig


class RunSession:
    def __init__(
        self,
        config: TrainerConfig,
        profile: str,
        group: ProcessGroup,
        recorder: RunRecorder,
        checkpoints: Checkpointer,
        watch: NonFiniteWatch | None,
    ) -> None:
        self.profile = profile
        self.group = group
        self.recorder = recorder
        self.checkpoints = checkpoints
        self.read_every_step = config.finite_check == "every_step"
        self.signals = StopSignals(announce=group.is_main)
        self.vote = HealthVote(group, watch, self.signals, recorder.writes)
        self.writes = recorder.writes
        self.nondeterminism = NondeterminismRecorder()
        self.stop_signal = 0  # what the last vote reported (0: none), acted on in after_step
        if group.is_main:
            checkpoints.open_for_writing(recorder.checkpoint_provenance())

    # ----------------------------------------------------------------- the run
    @contextlib.contextmanager
    def running(self, position: Position) -> Iterator[None]:
        """While the trainer runs: stop signals handled, nondeterministic ops recorded, and an
        error of the run turned into the fault that explains it. Signals stay handled (quietly)
        after a fault, so that torchrun stopping the other ranks cannot cut its exit short."""
        self.recorder.start(position)
        self.signals.install()
        self.nondeterminism.install()
        try:
            yield
        except TrainingFault:
            self.signals.quietly()
            raise
        except RuntimeError as error:
            self.signals.quietly()
            op = nondeterministic_op_in(error)
            if op is not None:
                raise NondeterministicOp(
                    f"profile {self.profile!r}: {op} has no deterministic implementation on "
                    f"{self.group.device.type}; use --profile eval to record such ops instead "
                    "of failing"
                ) from None
            self.group.raise_if_a_peer_failed()  # then that rank's line is the cause
            raise
        else:
            self.signals.uninstall()
        finally:
            self.nondeterminism.uninstall()

    def exit_on(self, fault: TrainingFault, position: Position) -> NoReturn:
        """The exit of a run that stopped early: the line completed with where to continue,
        the manifest updated by the reporting rank, the other ranks told, one line, exit."""
        newest = self.checkpoints.newest()
        if fault.resumable:
            fault.add_hint(
                "no checkpoint was written yet, so the run starts over"
                if newest is None
                else f"last complete checkpoint {newest}; continue with {next_commands().resume}"
            )
        self.recorder.record_fault(position, fault, newest)
        self.group.post_fault(str(fault))
        exit_with(fault)

    def finish(self, trainer: Trainer, final_metrics: dict[str, float]) -> None:
        """The end of a completed run: the manifest with the final evaluation and the
        determinism report, then the process group left in the one order that cannot hang."""
        self.recorder.finish(
            trainer.position,
            trainer.weights(),
            None if trainer.ema is None else trainer.ema.weights(),
            final_metrics,
            dict(self.nondeterminism.counts),
        )
        trainer.close()  # DDP's reducer holds the group: it goes first (see leave_process_group)
        self.group.leave()

    # ----------------------------------------------------------------- StepBoundary
    def check_step(self, position: Position, *, reports: bool, epoch_ends: bool) -> None:
        """The vote: a broken step stops every rank before it is reported. A stop signal is
        kept for `after_step`, which checkpoints the step once its rows are logged."""
        due = self.checkpoints.due(position, epoch_ends)
        verdict = self.vote(position, read_finite=self.read_every_step or reports or due)
        self.stop_signal = verdict.stop_signal

    def after_step(self, position: Position, trainer: Stateful, *, epoch_ends: bool) -> None:
        if self.stop_signal:
            self._save(position, trainer)
            where = f"step {position.step} (epoch {position.epoch_number})"
            raise Interrupted.by(self.stop_signal, where)
        if self.checkpoints.due(position, epoch_ends):
            self._save(position, trainer)

    def after_epoch(self, position: Position, trainer: Stateful) -> None:
        self._save(position, trainer)

    def after_training(self, position: Position, trainer: Stateful) -> None:
        if not self.checkpoints.saved_at(position.step):
            self._save(position, trainer)

    # ----------------------------------------------------------------- the save
    def _save(self, position: Position, trainer: Stateful) -> None:
        """Collective: the state is read for non-finite values first (never saved broken),
        gathered from every rank, written by rank 0, and the vote after it tells every rank
        whether the write failed."""
        if self.vote.read_at_step != position.step:
            self.vote(position, read_finite=True)
        per_rank = self.checkpoints.per_rank
        with self.group.guard("gathering the checkpoint of step {step}", position.step):
            state = trainer.state_dict(whole=not per_rank)
        self.recorder.flush_logs()
        writing = self.group.guard("writing the checkpoint of step {step}", position.step)
        with (
            self.writes.guarded(self.checkpoints.path_of(position.step)),
            writing if per_rank else contextlib.nullcontext(),
        ):
            self.checkpoints.save(position, state, write=self.group.is_main)
        self.vote(position, read_finite=False)
