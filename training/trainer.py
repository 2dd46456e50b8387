"""The training loop, its resumable state, and evaluation.

The trainer knows what a run computes and nothing of the process around it: it asks its step
strategy (training/parallel/data_parallel.py) for gradients, applies the optimizer, and tells its collaborators
what happened: `events` (the recorder), `boundary` (where the runtime votes, checkpoints and
stops every rank together), `watch` (the non-finite check) and `guard` (names a collective that
failed). All of them are keyword-only and replaceable; a test or a benchmark passes its own.

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
import itertools
import time
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from foundation.errors import UserError
from foundation.section import RUNTIME, STOPPING, Section
from seeding import capture_rng_state
from training.compile import CompileConfig, compile_seconds
from training.determinism import Precision
from training.ema import EmaConfig, WeightAverage
from training.events import (
    EpochLoader,
    NoBoundary,
    NoEvents,
    Position,
    StepBoundary,
    StoredTensors,
    TrainingEvents,
)
from training.health import NonFiniteWatch, model_state_tensors
from training.objective import Objective
from training.optim import OptimConfig, build_optimizer, build_scheduler, check_schedule
from training.parallel.dtensor import (
    clip_grad_norm,
)
from training.parallel.protocol import Batch, ParallelMode, StepParts
from training.topology import (
    CollectiveGuard,
    Topology,
    all_gather_objects,
    broadcast_from_rank_0,
    local_tensor,
    unguarded,
)


class TrainerConfig(Section):
    """The `trainer` section: what the loop and its step strategy read (checkpointing has its
    own section, runtime/checkpoint/owner.py; collective timeouts theirs, runtime/process_group.py)."""

    epochs: int = Field(8, ge=1, description="epochs to train", json_schema_extra=STOPPING)
    max_steps: int | None = Field(
        None,
        ge=1,
        description="stop after this many optimizer steps in total (null = no limit)",
        json_schema_extra=STOPPING,
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="`auto` (CUDA if available), `cpu`, `cuda`"
    )
    log_every_steps: int = Field(
        50,
        ge=1,
        description="step records in metrics.jsonl and TensorBoard",
        json_schema_extra=RUNTIME,
    )
    limit_train_batches: int | None = Field(
        None, ge=1, description="optimizer steps per epoch (small debug runs)"
    )
    accumulate_steps: int = Field(
        1,
        ge=1,
        description="batches per optimizer step (gradient accumulation), each weighted by its "
        "samples; steps, the schedule, max_steps, limit_train_batches and checkpoints count "
        "optimizer steps; an epoch's last batches that fill no whole step are skipped",
    )
    ema: EmaConfig = Field(EmaConfig(), description="an EMA of the weights (training/ema.py)")
    compile: CompileConfig = Field(
        CompileConfig(), description="torch.compile of the training passes (training/compile.py)"
    )
    trace_steps: int = Field(
        0,
        ge=0,
        description="torch.profiler over this many steps after the first two, a trace in the "
        "run's tb/ folder (runtime/step_trace.py); 0: none",
        json_schema_extra=RUNTIME,
    )
    micro_batch_size: int | None = Field(
        None, ge=1, description="samples per forward/backward in the world-size-invariant mode"
    )
    world_size_invariant: bool = Field(
        False,
        description="the same weights and metrics for any served world size "
        "(docs/world-size-invariance.md); needs data.global_batch_size, trainer.micro_batch_size "
        "and debug or eval",
    )
    finite_check: Literal["every_step", "log_steps"] = Field(
        "every_step",
        description="when the host reads the non-finite flag: after every step, or only at log "
        "steps, checkpoints and epoch ends (no extra host sync per step)",
        json_schema_extra=RUNTIME,
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

    def add(self, other: EpochTotals) -> None:
        self.loss_sum = self.loss_sum + other.loss_sum
        self.correct = self.correct + other.correct
        self.count += other.count


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How many optimizer steps an epoch and the learning-rate schedule have."""

    steps_per_epoch: int
    horizon: int

    @classmethod
    def of(cls, config: TrainerConfig, optim: OptimConfig, loader_batches: int) -> Schedule:
        """From the loader's batches per epoch; a one-line UserError for an accumulation or a
        warmup the run cannot hold (checked before anything is written)."""
        if config.accumulate_steps > loader_batches:
            raise UserError(
                f"trainer.accumulate_steps={config.accumulate_steps} is more than the "
                f"{loader_batches} batches of an epoch on this rank"
            )
        steps = loader_batches // config.accumulate_steps
        limit = config.limit_train_batches
        steps = steps if limit is None else min(steps, limit)
        schedule = cls(steps, config.epochs * steps)
        check_schedule(optim, schedule.horizon, steps)
        return schedule


class Trainer:
    def __init__(
        self,
        config: TrainerConfig,
        model: nn.Module,
        *,
        optim: OptimConfig,
        objective: Objective | None = None,
        precision: Precision,
        topology: Topology,
        mode: ParallelMode,
        train_loader: EpochLoader,
        val_loader: EpochLoader,
        events: TrainingEvents | None = None,
        boundary: StepBoundary | None = None,
        watch: NonFiniteWatch | None = None,
        guard: CollectiveGuard = unguarded,
    ) -> None:
        self.config = config
        self.topology = topology
        self.device = topology.device
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.events = events or NoEvents()
        self.boundary = boundary or NoBoundary()
        self.watch = watch  # None: no non-finite check (a benchmark of the bare step)
        self.guard = guard
        self.precision = precision
        self.memory_format = (
            torch.channels_last if precision.channels_last else torch.contiguous_format
        )
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.step = mode.training_step(
            StepParts(
                self.model,
                topology,
                precision,
                objective or Objective(),
                config.accumulate_steps,
                config.compile,
            )
        )
        self.replicas = mode.data_replicas(topology)[0]
        # Where the mode keeps the state: whole tensors gathered and re-cut for checkpoints.
        self.layout = mode.state_layout
        optimizer = build_optimizer(optim, self.model)
        # Split over the ranks (ZeRO-1, invariant mode), or None: it updates every parameter.
        self.optimizer_partition = mode.optimizer_partition(optimizer, topology)
        self.optimizer = (
            optimizer if self.optimizer_partition is None else self.optimizer_partition.optimizer
        )
        self.optimizer_layout = optimizer  # the per-parameter layout checkpoints hold
        self.clip_grad_norm = optim.clip_grad_norm
        self.grad_norm: torch.Tensor | None = None  # of the last step, before clipping
        self.ema = WeightAverage(config.ema, self.model) if config.ema.enabled else None
        schedule = Schedule.of(config, optim, train_loader.batches_per_epoch())
        self.steps_per_epoch = schedule.steps_per_epoch
        self.horizon = schedule.horizon
        self.scheduler, self.lr_factor = build_scheduler(
            self.optimizer, optim, self.horizon, self.steps_per_epoch
        )
        self.scaler = torch.amp.GradScaler("cuda") if precision.amp == torch.float16 else None
        if self.scaler is not None:
            # A step the scaler skips calls no optimizer.step(); the schedule counts steps,
            # skipped or not, so torch's warning about the order is noise here.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        self.position = Position()
        self.totals = EpochTotals.zeros(self.device)
        self._evaluated: tuple[int, dict[str, float]] | None = None  # (step, metrics)

    # ----------------------------------------------------------------- schedule
    def max_steps_reached(self) -> bool:
        limit = self.config.max_steps
        return limit is not None and self.position.step >= limit

    def finished(self) -> bool:
        return self.position.epoch >= self.config.epochs or self.max_steps_reached()

    # ----------------------------------------------------------------- loop
    def fit(self) -> None:
        while not self.finished():
            epoch_start, compiled_before = time.perf_counter(), compile_seconds()
            seen_before = self.totals.count
            completed = self.train_epoch()
            if not completed:
                break
            # Throughput of the steps: the time a compile took is reported apart.
            compiling = compile_seconds() - compiled_before
            elapsed = time.perf_counter() - epoch_start - compiling
            metrics = self.epoch_metrics(seen_before, elapsed)
            self.position = Position(self.position.epoch + 1, 0, self.position.step)
            self.totals = EpochTotals.zeros(self.device)
            self.events.epoch_finished(self.position, metrics)
            self.boundary.after_epoch(self.position, self)
        self.boundary.after_training(self.position, self)

    def optimizer_steps(self, start: int) -> Iterator[list[Batch]]:
        """The epoch's batches in groups of `accumulate_steps`, one per optimizer step, from
        optimizer step `start` of the epoch (a resume point is always a whole step)."""
        per_step = self.config.accumulate_steps
        batches = iter(self.train_loader.epoch(self.position.epoch, start_batch=start * per_step))
        while len(group := list(itertools.islice(batches, per_step))) == per_step:
            yield group

    def train_epoch(self) -> bool:
        """Train until the epoch ends (True) or max_steps stops it (False)."""
        per_epoch = self.steps_per_epoch
        log_every = self.config.log_every_steps
        self.model.train()
        for batches in self.optimizer_steps(self.position.batch_in_epoch):
            if self.position.batch_in_epoch >= per_epoch:
                break
            with self.guard("the gradient exchange of step {step}", self.position.step + 1):
                loss = self.train_step(batches)
            position = self.position = Position(
                self.position.epoch, self.position.batch_in_epoch + 1, self.position.step + 1
            )
            samples = sum(labels.numel() for _, labels in batches)
            self.events.step_finished(position, per_epoch, samples * self.replicas)
            logged = position.step % log_every == 0
            epoch_ends = position.batch_in_epoch >= per_epoch or self.max_steps_reached()
            # Every rank at the same boundary: a broken state ends the run here, before anything
            # of this step is reported; a checkpoint of the step comes after its log rows.
            self.boundary.check_step(position, reports=logged or epoch_ends, epoch_ends=epoch_ends)
            if logged:
                values = {"loss": float(loss), "lr": self.scheduler.get_last_lr()[0]}
                if self.grad_norm is not None:
                    values["grad_norm"] = float(self.grad_norm)
                self.events.step_logged(position, values)
            self.boundary.after_step(position, self, epoch_ends=epoch_ends)
            if self.max_steps_reached():
                return position.batch_in_epoch >= per_epoch
        return True

    def train_step(self, batches: list[Batch]) -> torch.Tensor:
        """One optimizer step over `batches` (accumulate_steps of them)."""
        on_device = [self._to_device(images, labels) for images, labels in batches]
        self.optimizer.zero_grad(set_to_none=True)
        result = self.step.gradients(self.position.step, on_device, self._backward)
        if self.clip_grad_norm is not None:
            # The reduced gradient (DDP's average, or the invariant mode's fixed-order sum),
            # the same on every rank; under a GradScaler unscaled first.
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            self.grad_norm = clip_grad_norm(list(self.model.parameters()), self.clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.after_step(self.position.step + 1, self.model)
        if self.watch is not None:
            # Under a GradScaler inf gradients are skipped steps, not failures: state only.
            gradients = [] if self.scaler is not None else self._gradients()
            state = model_state_tensors(self.model, self.optimizer)
            self.watch.record(self.position.step + 1, result.loss, gradients, state)
        with torch.no_grad():
            self.totals.loss_sum += result.loss.double() * result.samples
            self.totals.correct += result.correct.long()
            self.totals.count += result.samples
        return result.loss

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _gradients(self) -> list[torch.Tensor]:
        return [local_tensor(p.grad) for p in self.model.parameters() if p.grad is not None]

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
        with self.guard("the epoch-end metrics at step {step}", self.position.step):
            seen = self.totals.count - seen_before
            counts = torch.tensor(
                [float(self.totals.count), float(seen)], dtype=torch.float64, device=self.device
            )
            sums = torch.cat(
                [self.totals.loss_sum.reshape(1), self.totals.correct.double().reshape(1), counts]
            )
            loss_sum, correct, count, seen_total = self.step.epoch_sums(sums)
        evaluation = self.evaluate()
        return {
            "train_loss": loss_sum / max(count, 1.0),
            "train_acc": correct / max(count, 1.0),
            **evaluation,
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": seen_total / max(elapsed, 1e-9),
        }

    def evaluate(self) -> dict[str, float]:
        """Validation with rank 0's BatchNorm statistics on every rank (the ones that are saved);
        with an EMA, its weights are evaluated too (`ema_val_loss`, `ema_val_acc`)."""
        if self._evaluated is not None and self._evaluated[0] == self.position.step:
            return self._evaluated[1]
        with self.guard("the evaluation at step {step}", self.position.step):
            metrics = self._evaluate(self.model, "val")
            if self.ema is not None:
                metrics |= self._evaluate(self.ema.module, "ema_val")
        self._evaluated = (self.position.step, metrics)
        return metrics

    @torch.no_grad()
    def _evaluate(self, model: nn.Module, prefix: str) -> dict[str, float]:
        broadcast_from_rank_0(self.topology, model.buffers())
        model.eval()
        per_batch: list[torch.Tensor] = []
        for images, labels in self.val_loader.epoch(0):
            images, labels = self._to_device(images, labels)
            with self._autocast():
                logits = model(images)
            loss = F.cross_entropy(logits.float(), labels, reduction="sum").double()
            correct = (logits.argmax(dim=1) == labels).sum().double()
            per_batch.append(torch.stack([loss, correct, loss.new_tensor(float(labels.numel()))]))
        model.train()
        loss_sum, correct, count = self.step.evaluation_sums(per_batch)
        return {
            f"{prefix}_loss": loss_sum / max(count, 1.0),
            f"{prefix}_acc": correct / max(count, 1.0),
        }

    def observe(self, events: TrainingEvents, boundary: StepBoundary) -> None:
        """Who hears of every step (the recorder) and who acts between steps (the session):
        attached once the run around the trainer is built, before `fit`."""
        self.events, self.boundary = events, boundary

    def close(self) -> None:
        """Drop the step strategy: the DDP wrapper's reducer in it holds the process group,
        which can only be left after it is gone (runtime/process_group.py)."""
        del self.step

    # ----------------------------------------------------------------- resumable state
    def weights(self) -> dict[str, torch.Tensor]:
        """The model's weights as whole tensors (a collective under tensor parallelism: the
        shards are gathered on every rank)."""
        return self.layout.whole(self.model.state_dict())

    def state_dict(self, whole: bool = True) -> dict[str, Any]:
        """Collective: every rank's RNG state and running sums are gathered onto every rank.
        The model and optimizer tensors are whole (gathered where split), or with
        `whole=False` this rank's shards, for a checkpoint that every rank writes."""
        rng_states = all_gather_objects(self.topology, capture_rng_state())
        totals = all_gather_objects(self.topology, self.totals.state_dict())
        if self.optimizer_partition is not None:
            optimizer = self.optimizer_partition.whole_state()
        else:
            optimizer = self.optimizer.state_dict()
        return {
            "model": self.weights() if whole else self.model.state_dict(),
            "optimizer": self.layout.whole(optimizer) if whole else optimizer,
            "scheduler": self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "schedule_horizon": self.horizon,
            "step": self.position.step,
            "epoch": self.position.epoch,
            "batch_in_epoch": self.position.batch_in_epoch,
            "epoch_totals": totals,
            "rng": rng_states,
            "world_size": self.topology.world_size,
            "replicas": self.replicas,
        }

    def _checkpoint_tensors(self, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A checkpoint's model and optimizer state, each tensor laid out as this run's: read
        slice by slice from a sharded checkpoint, cut from a whole one where split."""
        stored: StoredTensors | None = state.get("stored")
        if stored is not None:
            return stored.read_for(self.model, self.optimizer_layout)
        return (
            self.layout.model_state_like(self.model, state["model"]),
            self.layout.optimizer_state_like(self.optimizer, state["optimizer"]),
        )

    def load_weights(self, state: dict[str, Any]) -> None:
        """A checkpoint's weights (and EMA weights) only, to evaluate it on any layout."""
        model, _ = self._checkpoint_tensors(state)
        self.model.load_state_dict(model)
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint whose computation the checkpoint owner has checked."""
        model, optimizer = self._checkpoint_tensors(state)
        self.model.load_state_dict(model)
        if self.optimizer_partition is not None:
            self.optimizer_partition.load_whole_state(optimizer)
        else:
            self.optimizer.load_state_dict(optimizer)
        self.horizon = int(state["schedule_horizon"])
        self.lr_factor.horizon = max(1, self.horizon)
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise UserError("the checkpoint holds no EMA state, and trainer.ema is on")
            self.ema.load_state_dict(state["ema"])
        self.position = Position(state["epoch"], state["batch_in_epoch"], state["step"])
        rank = self.topology.rank
        saved = state["epoch_totals"]
        replicas = int(state.get("replicas", self.replicas))  # older checkpoints: the same
        self.totals = EpochTotals.zeros(self.device)
        for index in self.step.totals_to_continue(rank, len(saved), replicas):
            self.totals.add(EpochTotals.from_state_dict(saved[index], self.device))
        self.step.restore_rng(state["rng"], rank, self.position.step, replicas)
