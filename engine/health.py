"""The vote at each step boundary: should every rank go on, stop, or checkpoint and stop?

Why a vote: one rank's NaN, one rank's SIGTERM or one failed write on rank 0 must stop all
ranks at the same step, or the others wait forever in the next collective. Each rank puts in
what it knows (`RankHealth`) and every rank reads the same `Verdict`.

Why the non-finite check lives on the device: reading the loss on the host every step makes the
CPU wait for the GPU every step. `NonFiniteWatch` keeps the first bad step in a device tensor;
the host reads it only when the vote asks (`trainer.finite_check`): every step in debug and eval,
and at log steps, checkpoints and epoch ends in production, where the vote itself travels on the
host (gloo) and never waits for the GPU. No checkpoint is written without a read first, so a
broken state is never saved.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.distributed import DistContext, all_gather_ints

NOT_SEEN = -1
LOSS, GRADIENTS = 1, 2  # what was not finite at the first bad step (bits)


class NonFiniteWatch:
    """The first step whose loss (or, without a GradScaler, gradients) was not finite, and which
    of the two it was; both stay on the device until `read()`."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad_step = torch.full((), NOT_SEEN, dtype=torch.int64, device=device)
        self.what = torch.zeros((), dtype=torch.int64, device=device)

    def record(self, step: int, loss: torch.Tensor, gradients: list[torch.Tensor]) -> None:
        """Queue the check of `step` on the device: no host synchronisation.

        Pass no gradients under a GradScaler: its skipped steps (inf gradients at too high a
        scale) are how fp16 training works, not failures."""
        what = (~torch.isfinite(loss.detach()).all()).long() * LOSS
        if gradients:
            total = torch.nn.utils.get_total_norm(gradients, norm_type=2.0)
            what = what + (~torch.isfinite(total)).long() * GRADIENTS
        first = (what > 0) & (self.first_bad_step == NOT_SEEN)
        self.first_bad_step = torch.where(first, step, self.first_bad_step)
        self.what = torch.where(first, what, self.what)

    def read(self) -> tuple[int, int]:
        """(first bad step or NOT_SEEN, LOSS | GRADIENTS bits): this waits for the device."""
        step, what = torch.stack([self.first_bad_step, self.what]).tolist()
        return step, what


@dataclass(frozen=True)
class RankHealth:
    first_non_finite_step: int = NOT_SEEN  # NOT_SEEN also when not read this time
    non_finite_what: int = 0  # LOSS | GRADIENTS at that step
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
    def gather(cls, context: DistContext, mine: RankHealth) -> Verdict:
        votes = all_gather_ints(context, mine.as_ints())
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
        """ "non-finite loss at step 5 (epoch 0) on rank 1": the loss names the rank it came
        from; gradients, shared by all ranks under DDP, are named only without a bad loss."""
        step = self.non_finite_step
        at_step = [
            (rank, v.non_finite_what)
            for rank, v in enumerate(self.votes)
            if v.first_non_finite_step == step
        ]
        loss_ranks = [rank for rank, what in at_step if what & LOSS]
        what, ranks = ("loss", loss_ranks) if loss_ranks else ("gradients", [r for r, _ in at_step])
        on = f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))
        return f"non-finite {what} at step {step} (epoch {epoch}) on {on}"

    @property
    def write_failed(self) -> bool:
        return any(v.write_failed for v in self.votes)

    @property
    def stop_signal(self) -> int:
        """The first signal number any rank received (0: none)."""
        return next((v.stop_signal for v in self.votes if v.stop_signal), 0)
