"""How the trainer talks to the world around it, and what it needs from its data.

Why protocols: the trainer must not know who records it (metrics files, TensorBoard, a progress
line), who decides to checkpoint or stop, nor where its batches come from.
- `TrainingEvents`: plain values after steps, log steps and epochs (runtime/recorder.py).
- `StepBoundary`: every rank calls it after each step, each epoch and at the end; it is where
  the ranks stop together or checkpoint (runtime/session.py). It receives the trainer as a
  `Stateful`: the checkpoint owner knows a `state_dict` protocol, not a class.
- `EpochLoader`: the batches of an epoch (data/loaders.py's `SeededLoader`).
- `StoredTensors`: a checkpoint's model and optimizer tensors still on disk (a sharded
  checkpoint, runtime/checkpoint/directory.py), read into the trainer's own layout.
A test can pass any other implementation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class Position:
    """Where training stands: with per-sample seeds and a sampler that starts at an offset, this
    plus every rank's RNG state is all it takes to continue exactly, mid-epoch included."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0

    @property
    def epoch_number(self) -> int:
        """The epoch of the last step, counted from 1 as every line the user reads counts it
        (`epoch 1/2` is the first): `epoch` counts the epochs already ended, so a position at
        an epoch's end (batch 0) belongs to the epoch that just ended."""
        return self.epoch + 1 if self.batch_in_epoch or not self.step else self.epoch


class EpochLoader(Protocol):
    def epoch(
        self, epoch: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `epoch` for this rank, skipping the first `start_batch`."""
        ...

    def batches_per_epoch(self) -> int: ...


class Stateful(Protocol):
    def state_dict(self, whole: bool = True) -> dict[str, Any]:
        """Collective: everything needed to continue exactly (every rank's part gathered);
        `whole=False` leaves split tensors as this rank's shards (a sharded checkpoint)."""
        ...


class StoredTensors(Protocol):
    def read_for(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Collective: the model's and the optimizer's state dicts, each tensor shaped (and
        split over the ranks) like this run's, read from disk slice by slice."""
        ...


class TrainingEvents(Protocol):
    def step_finished(self, position: Position, batches_per_epoch: int, samples: int) -> None:
        """After every optimizer step; `samples` is this step's sample count over all ranks.
        Called on the hot path: implementations must not synchronise with the device."""
        ...

    def step_logged(self, position: Position, values: dict[str, float]) -> None:
        """Every `trainer.log_every_steps` steps, on every rank."""
        ...

    def epoch_finished(self, position: Position, metrics: dict[str, float]) -> None:
        """At the end of each epoch, with the metrics reduced over all ranks."""
        ...


class StepBoundary(Protocol):
    def check_step(self, position: Position, *, reports: bool, epoch_ends: bool) -> None:
        """Every rank, after each optimizer step, before anything of it is reported (`reports`:
        the trainer is about to log numbers of this step). May raise a `TrainingFault` to stop
        every rank here: a broken step is never reported."""
        ...

    def after_step(self, position: Position, trainer: Stateful, *, epoch_ends: bool) -> None:
        """Every rank, once the step's numbers were reported. May checkpoint the step (after its
        log rows, so that a resume from it finds them), then stop every rank there."""
        ...

    def after_epoch(self, position: Position, trainer: Stateful) -> None:
        """Every rank, after an epoch's metrics were reported."""
        ...

    def after_training(self, position: Position, trainer: Stateful) -> None:
        """Every rank, when training stops (epochs done or max_steps reached)."""
        ...


class NoBoundary:
    """Never stops, never checkpoints: a trainer on its own (tests, benchmarks)."""

    def check_step(self, position: Position, *, reports: bool, epoch_ends: bool) -> None:
        return None

    def after_step(self, position: Position, trainer: Stateful, *, epoch_ends: bool) -> None:
        return None

    def after_epoch(self, position: Position, trainer: Stateful) -> None:
        return None

    def after_training(self, position: Position, trainer: Stateful) -> None:
        return None


class NoEvents:
    """Tells nobody: a trainer on its own (benchmarks)."""

    def step_finished(self, position: Position, batches_per_epoch: int, samples: int) -> None:
        return None

    def step_logged(self, position: Position, values: dict[str, float]) -> None:
        return None

    def epoch_finished(self, position: Position, metrics: dict[str, float]) -> None:
        return None
