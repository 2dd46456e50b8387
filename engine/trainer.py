"""The training loop, its resumable state, and evaluation.

Why `state_dict` / `load_state_dict`: a checkpointer should know a protocol, not a class. The
state is the model, optimizer, scheduler and scaler, the `Position` (epoch, batch in epoch, step),
the running sums of the current epoch and every rank's RNG state: with per-sample augmentation
seeds and a sampler that can start at an offset, that is everything needed to continue an
interrupted run exactly where it stopped, mid-epoch included.

Why the running sums stay on the device: copying the loss to the host every step makes the CPU
wait for the GPU at every step. Numbers are brought to the host only where they are printed or
saved (log steps, epoch ends, checkpoints).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from engine.determinism import Precision
from engine.distributed import (
    DEFAULT_COLLECTIVE_TIMEOUT_S,
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    collective,
)
from engine.events import EpochLoader, Position, TrainingEvents
from engine.faults import Interrupted, NonFiniteLoss, OutputWriteFailed
from engine.health import NOT_SEEN, NonFiniteWatch, RankHealth, Verdict
from engine.invariance import InvariantMode, InvariantStep
from engine.optim import OptimConfig, build_optimizer, build_scheduler
from engine.section import Section
from engine.signals import StopSignals
from seeding import capture_rng_state, restore_rng_state


class TrainerConfig(Section):
    """The `trainer` section."""

    epochs: int = Field(8, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every_steps: int | None = Field(None, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    log_every_steps: int = Field(50, ge=1)
    limit_train_batches: int | None = Field(
        None, ge=1, description="batches per epoch (small runs)"
    )
    micro_batch_size: int | None = Field(
        None, ge=1, description="samples per forward/backward in the world-size-invariant mode"
    )
    world_size_invariant: bool = Field(
        False, description="the same weights for any world size (see engine/invariance.py)"
    )
    finite_check: Literal["every_step", "log_steps"] = Field(
        "every_step",
        description="when the host reads the non-finite flag (see engine/health.py); "
        "production uses log_steps: no extra host sync per step",
    )
    collective_timeout_s: float = Field(
        DEFAULT_COLLECTIVE_TIMEOUT_S,
        gt=0,
        description="how long a collective waits for a rank that stopped answering",
    )


@dataclasses.dataclass
class EpochTotals:
    """Running sums of the current epoch on this rank, on the training device (saved, so a
    resumed epoch reports alike)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    count: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> EpochTotals:
        return cls(
            torch.zeros((), dtype=torch.float64, device=device),
            torch.zeros((), dtype=torch.int64, device=device),
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "loss_sum": self.loss_sum.cpu(),
            "correct": self.correct.cpu(),
            "count": torch.tensor(self.count, dtype=torch.int64),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], device: torch.device) -> EpochTotals:
        return cls(state["loss_sum"].to(device), state["correct"].to(device), int(state["count"]))


class Trainer:
    def __init__(
        self,
        settings: TrainerConfig,
        optim: OptimConfig,
        precision: Precision,
        context: DistContext,
        model: nn.Module,
        train_loader: EpochLoader,
        val_loader: EpochLoader,
        events: TrainingEvents,
        invariant: InvariantMode | None = None,
        stop: StopSignals | None = None,
    ) -> None:
        self.settings = settings
        self.context = context
        self.device = context.device
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.events = events
        self.precision = precision
        self.memory_format = (
            torch.channels_last if precision.channels_last else torch.contiguous_format
        )
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.ddp: nn.Module = self.model
        # The invariant mode combines gradients itself, in a fixed order; DDP would all_reduce.
        self.invariant = None if invariant is None else InvariantStep(self.model, invariant)
        if context.distributed and self.invariant is None:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = build_optimizer(optim, self.model)
        self.horizon = settings.epochs * self.batches_per_epoch()
        self.scheduler, self.lr_factor = build_scheduler(self.optimizer, optim, self.horizon)
        self.scaler = torch.amp.GradScaler("cuda") if precision.amp == torch.float16 else None
        self.position = Position()
        self.totals = EpochTotals.zeros(self.device)
        self._evaluated: tuple[int, dict[str, float]] | None = None  # (step, metrics)
        self._checkpointed_step = -1
        self.stop = stop
        self.non_finite = NonFiniteWatch(self.device)
        self._write_failure: OutputWriteFailed | None = None  # rank 0's, until the next vote

    # ----------------------------------------------------------------- schedule
    def batches_per_epoch(self) -> int:
        batches = self.train_loader.batches_per_epoch()
        limit = self.settings.limit_train_batches
        return batches if limit is None else min(batches, limit)

    def max_steps_reached(self) -> bool:
        limit = self.settings.max_steps
        return limit is not None and self.position.step >= limit

    def finished(self) -> bool:
        return self.position.epoch >= self.settings.epochs or self.max_steps_reached()

    # ----------------------------------------------------------------- loop
    def fit(self) -> None:
        while not self.finished():
            epoch_start = time.perf_counter()
            seen_before = self.totals.count
            completed = self.train_epoch()
            if not completed:
                break
            elapsed = time.perf_counter() - epoch_start
            metrics = self.epoch_metrics(seen_before, elapsed)
            self.position = Position(self.position.epoch + 1, 0, self.position.step)
            self.totals = EpochTotals.zeros(self.device)
            self._report(self.events.epoch_finished, self.position, metrics)
            self.checkpoint()
        if self._checkpointed_step != self.position.step:
            self.checkpoint()

    def train_epoch(self) -> bool:
        """Train until the epoch ends (True) or max_steps stops it (False)."""
        per_epoch = self.batches_per_epoch()
        every = self.settings.checkpoint_every_steps
        log_every = self.settings.log_every_steps
        self.ddp.train()
        start = self.position.batch_in_epoch
        for images, labels in self.train_loader.epoch(self.position.epoch, start_batch=start):
            if self.position.batch_in_epoch >= per_epoch:
                break
            with collective(
                self.context, "the gradient exchange of step {step}", self.position.step + 1
            ):
                loss = self.train_step(images, labels)
            position = self.position = Position(
                self.position.epoch, self.position.batch_in_epoch + 1, self.position.step + 1
            )
            self.events.step_finished(position, per_epoch, labels.numel() * self.context.world_size)
            logged = position.step % log_every == 0
            # The host reads the non-finite flag every step, or before anything is reported.
            epoch_ends = position.batch_in_epoch >= per_epoch or self.max_steps_reached()
            self.stop_if_asked(
                read_finite=self.settings.finite_check == "every_step" or logged or epoch_ends
            )
            if logged:
                lr = self.scheduler.get_last_lr()[0]
                self._report(self.events.step_logged, position, {"loss": float(loss), "lr": lr})
            if self.max_steps_reached():
                return position.batch_in_epoch >= per_epoch
            if every and position.step % every == 0 and position.batch_in_epoch < per_epoch:
                self.checkpoint()
        return True

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images, labels = self._to_device(images, labels)
        if self.invariant is not None:
            return self._invariant_step(images, labels)
        with self._autocast():
            logits = self.ddp(images)
            loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.non_finite.record(self.position.step + 1, loss, [])  # skipped steps are fine
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.non_finite.record(self.position.step + 1, loss, self._gradients())
            self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.totals.loss_sum += loss.detach().double() * labels.numel()
            self.totals.correct += (logits.argmax(dim=1) == labels).sum()
            self.totals.count += labels.numel()
        return loss.detach()

    def _invariant_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The global batch's mean gradient, combined in one order for every world size; the
        running sums are then those of the global batch, identical on every rank."""
        assert self.invariant is not None
        result = self.invariant.gradients(self.position.step, images, labels, self.model)
        self.non_finite.record(self.position.step + 1, result.loss, self._gradients())
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.totals.loss_sum += result.loss.double() * result.samples
            self.totals.correct += result.correct.long()
            self.totals.count += result.samples
        return result.loss

    def _gradients(self) -> list[torch.Tensor]:
        return [p.grad for p in self.model.parameters() if p.grad is not None]

    # ----------------------------------------------------------------- stopping together
    def stop_if_asked(self, read_finite: bool) -> None:
        """The vote at a step boundary: a broken state stops every rank here, a stop signal
        makes every rank checkpoint here and stop."""
        verdict = self._vote(read_finite)
        self._stop_if_broken(verdict)
        if verdict.stop_signal:
            self.checkpoint()
            where = f"step {self.position.step} (epoch {self.position.epoch})"
            raise Interrupted.by(verdict.stop_signal, where)

    def _vote(self, read_finite: bool) -> Verdict:
        step, what = self.non_finite.read() if read_finite else (NOT_SEEN, 0)
        mine = RankHealth(
            first_non_finite_step=step,
            non_finite_what=what,
            stop_signal=self.stop.received if self.stop is not None else 0,
            write_failed=self._write_failure is not None,
        )
        with collective(self.context, "the health vote after step {step}", self.position.step):
            return Verdict.gather(self.context, mine)

    def _stop_if_broken(self, verdict: Verdict) -> None:
        step = verdict.non_finite_step
        if step is not None:
            raise NonFiniteLoss(
                f"{verdict.non_finite_description(self.position.epoch)}; "
                f"nothing from step {step} on was saved"
            )
        if verdict.write_failed:
            raise self._write_failure or OutputWriteFailed("rank 0 could not write its outputs")

    def _report(self, event: Any, *arguments: Any) -> None:
        """Call an event that writes files; a failed write stops every rank at the next vote."""
        try:
            event(*arguments)
        except OutputWriteFailed as failure:
            self._write_failure = failure

    def checkpoint(self) -> None:
        """Collective: every rank contributes its state; then the events decide where it goes.

        The vote before it reads the non-finite flag (a broken state is never saved); the vote
        after it tells every rank whether rank 0's write failed."""
        self._stop_if_broken(self._vote(read_finite=True))
        with collective(
            self.context, "gathering the checkpoint of step {step}", self.position.step
        ):
            state = self.state_dict()
        self._report(self.events.checkpoint_due, self.position, state)
        self._stop_if_broken(self._vote(read_finite=False))
        self._checkpointed_step = self.position.step

    def _autocast(self) -> torch.autocast:
        amp = self.precision.amp
        return torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None)

    def _to_device(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return images, labels.to(self.device, non_blocking=True)

    # ----------------------------------------------------------------- metrics
    def epoch_metrics(self, seen_before: int, elapsed: float) -> dict[str, float]:
        with collective(self.context, "the epoch-end metrics at step {step}", self.position.step):
            return self._epoch_metrics(seen_before, elapsed)

    def _epoch_metrics(self, seen_before: int, elapsed: float) -> dict[str, float]:
        seen = self.totals.count - seen_before
        if self.invariant is not None:  # already the sums of the global batches, on every rank
            return self._metrics(
                float(self.totals.loss_sum),
                float(self.totals.correct),
                float(self.totals.count),
                float(seen),
                elapsed,
            )
        sums = torch.stack(
            [
                self.totals.loss_sum,
                self.totals.correct.double(),
                torch.tensor(float(self.totals.count), dtype=torch.float64, device=self.device),
                torch.tensor(float(seen), dtype=torch.float64, device=self.device),
            ]
        ).to(self.device if self.context.backend == "nccl" else "cpu")
        loss_sum, correct, count, seen_total = all_reduce_sum(self.context, sums).tolist()
        return self._metrics(loss_sum, correct, count, seen_total, elapsed)

    def _metrics(
        self, loss_sum: float, correct: float, count: float, seen_total: float, elapsed: float
    ) -> dict[str, float]:
        evaluation = self.evaluate()
        return {
            "train_loss": loss_sum / max(count, 1.0),
            "train_acc": correct / max(count, 1.0),
            **evaluation,
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": seen_total / max(elapsed, 1e-9),
        }

    def evaluate(self) -> dict[str, float]:
        """Validation with rank 0's BatchNorm statistics on every rank (the ones that are saved)."""
        with collective(self.context, "the evaluation at step {step}", self.position.step):
            return self._evaluate()

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        if self._evaluated is not None and self._evaluated[0] == self.position.step:
            return self._evaluated[1]
        if self.context.distributed:
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        per_batch: list[torch.Tensor] = []  # the invariant mode adds them in chunk order
        for images, labels in self.val_loader.epoch(0):
            images, labels = self._to_device(images, labels)
            with self._autocast():
                logits = self.model(images)
            loss = F.cross_entropy(logits.float(), labels, reduction="sum").double()
            correct = (logits.argmax(dim=1) == labels).sum().double()
            batch = torch.stack([loss, correct, loss.new_tensor(float(labels.numel()))])
            if self.invariant is None:
                sums += batch
            else:
                per_batch.append(batch)
        self.model.train()
        if self.invariant is None:
            loss_sum, correct, count = all_reduce_sum(self.context, sums).tolist()
        else:
            loss_sum, correct, count = self._sum_in_chunk_order(per_batch)
        metrics = {"val_loss": loss_sum / max(count, 1.0), "val_acc": correct / max(count, 1.0)}
        self._evaluated = (self.position.step, metrics)
        return metrics

    def _sum_in_chunk_order(self, per_batch: list[torch.Tensor]) -> list[float]:
        """Validation sums added over chunks in global order: the same for any world size.

        Batch i of rank r is chunk r + i * W (see the evaluation layout of the sampler)."""
        mine = torch.stack(per_batch).tolist() if per_batch else []
        world = self.context.world_size
        chunks: dict[int, list[float]] = {}
        for rank, batches in enumerate(all_gather_objects(self.context, mine)):
            for i, sums in enumerate(batches):
                chunks[rank + i * world] = sums
        totals = [0.0, 0.0, 0.0]
        for chunk in sorted(chunks):
            totals = [total + value for total, value in zip(totals, chunks[chunk], strict=True)]
        return totals

    # ----------------------------------------------------------------- resumable state
    def state_dict(self) -> dict[str, Any]:
        """Collective: every rank's RNG state and running sums are gathered onto every rank."""
        rng_states = all_gather_objects(self.context, capture_rng_state())
        totals = all_gather_objects(self.context, self.totals.state_dict())
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "schedule_horizon": self.horizon,
            "step": self.position.step,
            "epoch": self.position.epoch,
            "batch_in_epoch": self.position.batch_in_epoch,
            "epoch_totals": totals,
            "rng": rng_states,
            "world_size": self.context.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint already checked by `engine.resume.check_same_computation`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.horizon = int(state["schedule_horizon"])
        self.lr_factor.horizon = max(1, self.horizon)
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.position = Position(state["epoch"], state["batch_in_epoch"], state["step"])
        rank = self.context.rank
        saved_ranks = len(state["rng"])
        # In the invariant mode the running sums are the same on every rank, and no per-rank
        # stream is drawn from while training; a checkpoint of another world size continues.
        own = rank if self.invariant is None else 0
        self.totals = EpochTotals.from_state_dict(state["epoch_totals"][own], self.device)
        if rank < saved_ranks:
            restore_rng_state(state["rng"][rank])
        self._checkpointed_step = self.position.step
