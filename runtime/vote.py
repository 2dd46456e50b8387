"""The vote at each step boundary: should every rank go on, stop, or checkpoint and stop?

Why a vote: one rank's NaN, one rank's SIGTERM or one failed write on rank 0 must stop all
ranks at the same step, or the others wait forever in the next collective. Each rank puts in
what it knows (`RankHealth`) and every rank reads the same `Verdict`: one all_gather of four
integers, on the host (on a gloo group under NCCL), so it never waits for the GPU.

When the non-finite watch (training/health.py) is read on the host: every step in debug and
eval (`trainer.finite_check=every_step`), and in production only at log steps, epoch ends and
before every checkpoint. No checkpoint is written without a read first, so a broken state is
never saved.
"""

from __future__ import annotations

from dataclasses import dataclass

from foundation.faults import NonFiniteLoss, NonFiniteState, OutputWriteFailed
from runtime.process_group import ProcessGroup
from runtime.signals import StopSignals
from runtime.writes import WriteFailures
from training.events import Position
from training.health import GRADIENTS, LOSS, NOT_SEEN, STATE, NonFiniteWatch


@dataclass(frozen=True)
class RankHealth:
    first_non_finite_step: int = NOT_SEEN  # NOT_SEEN also when not read this time
    non_finite_what: int = 0  # LOSS | GRADIENTS | STATE at that step
    stop_signal: int = 0  # the signal number received, 0 if none
    write_failed: bool = False

    def as_ints(self) -> list[int]:
        return [
            self.first_non_finite_step,
            self.non_finite_what,
            self.stop_signal,
            int(self.write_failed),
        ]


@dataclass(frozen=True)
class Verdict:
    """What every rank concludes from the same gathered votes."""

    votes: tuple[RankHealth, ...]

    @classmethod
    def gather(cls, group: ProcessGroup, mine: RankHealth) -> Verdict:
        votes = group.all_gather_ints(mine.as_ints())
        return cls(
            tuple(
                RankHealth(step, what, signal, bool(failed)) for step, what, signal, failed in votes
            )
        )

    @property
    def non_finite_step(self) -> int | None:
        steps = [v.first_non_finite_step for v in self.votes if v.first_non_finite_step >= 0]
        return min(steps) if steps else None

    def non_finite_description(self, epoch: int) -> str:
        """ "non-finite loss at step 5 (epoch 1) on rank 1" (`epoch` counted from 1, as the
        training log counts it): the loss names the rank it came from; gradients and state,
        shared by all ranks under DDP, are named only without a bad loss."""
        step = self.non_finite_step
        at_step = [
            (rank, v.non_finite_what)
            for rank, v in enumerate(self.votes)
            if v.first_non_finite_step == step
        ]
        what, ranks = "state (parameters, buffers or optimizer)", [r for r, _ in at_step]
        for bit, name in ((LOSS, "loss"), (GRADIENTS, "gradients")):
            flagged = [rank for rank, bits in at_step if bits & bit]
            if flagged:
                what, ranks = name, flagged
                break
        on = f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))
        return f"non-finite {what} at step {step} (epoch {epoch}) on {on}"

    def raise_if_non_finite(self, epoch: int) -> None:
        step = self.non_finite_step
        if step is None:
            return
        message = f"{self.non_finite_description(epoch)}; nothing from step {step} on was saved"
        only_state = all(
            v.non_finite_what == STATE for v in self.votes if v.first_non_finite_step == step
        )
        raise (NonFiniteState if only_state else NonFiniteLoss)(message)

    @property
    def write_failed(self) -> bool:
        return any(v.write_failed for v in self.votes)

    @property
    def stop_signal(self) -> int:
        """The first signal number any rank received (0: none)."""
        return next((v.stop_signal for v in self.votes if v.stop_signal), 0)


class HealthVote:
    """The vote as a run takes it: what this rank knows (the watch, if read; a signal; rank 0's
    failed write) in, the same fault raised on every rank, or the verdict out."""

    def __init__(
        self,
        group: ProcessGroup,
        watch: NonFiniteWatch | None,
        signals: StopSignals,
        writes: WriteFailures,
    ) -> None:
        self.group = group
        self.watch = watch
        self.signals = signals
        self.writes = writes
        self.read_at_step = -1  # the last step whose vote read the non-finite watch

    def __call__(self, position: Position, read_finite: bool) -> Verdict:
        step, what = (NOT_SEEN, 0)
        if read_finite and self.watch is not None:
            step, what = self.watch.read()
        mine = RankHealth(step, what, self.signals.received, self.writes.failed)
        with self.group.guard("the health vote after step {step}", position.step):
            verdict = Verdict.gather(self.group, mine)
        if read_finite:
            self.read_at_step = position.step
        verdict.raise_if_non_finite(position.epoch_number)
        if verdict.write_failed:
            raise self.writes.first or OutputWriteFailed("rank 0 could not write its outputs")
        return verdict
