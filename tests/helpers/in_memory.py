"""A trainer without a process group or files, for unit tests: an in-memory loader that
satisfies the `EpochLoader` protocol, events and a boundary that keep what they are told."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch

from models.smallcnn import SmallCNN
from training.determinism import Precision
from training.events import NoBoundary, Position, Stateful, StepBoundary
from training.health import NonFiniteWatch
from training.optim import OptimConfig
from training.parallel.data_parallel import DataParallelMode
from training.topology import Topology
from training.trainer import Trainer, TrainerConfig

SINGLE_PROCESS = Topology.single()


class InMemoryLoader:
    """Four batches of 8 random 16x16 images, in an order that depends only on the epoch."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(32, 3, 16, 16, generator=generator)
        self.labels = torch.randint(0, 10, (32,), generator=generator)

    def epoch(
        self, epoch: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(32, generator=torch.Generator().manual_seed(epoch))
        for batch in range(start_batch, 4):
            chosen = order[batch * 8 : (batch + 1) * 8]
            yield self.images[chosen], self.labels[chosen]

    def batches_per_epoch(self) -> int:
        return 4


class KeptEvents:
    def __init__(self) -> None:
        self.steps: list[Position] = []
        self.logged: list[tuple[int, set[str]]] = []
        self.epochs: list[tuple[int, set[str]]] = []

    def step_finished(self, position: Position, batches_per_epoch: int, samples: int) -> None:
        assert batches_per_epoch == 4 and samples == 8
        self.steps.append(position)

    def step_logged(self, position: Position, values: dict[str, float]) -> None:
        self.logged.append((position.step, set(values)))

    def epoch_finished(self, position: Position, metrics: dict[str, float]) -> None:
        self.epochs.append((position.epoch, set(metrics)))


class KeptBoundary(NoBoundary):
    """Where the trainer stops at a boundary, and the state it hands over at the end; with the
    trainer's `events`, whether a step's row was already logged when `after_step` came."""

    def __init__(self, events: KeptEvents | None = None) -> None:
        self.events = events
        self.calls: list[tuple[str, int, bool]] = []
        self.final_state: dict[str, Any] = {}

    def check_step(self, position: Position, *, reports: bool, epoch_ends: bool) -> None:
        self.calls.append(("check", position.step, reports))

    def after_step(self, position: Position, trainer: Stateful, *, epoch_ends: bool) -> None:
        logged = self.events is not None and position.step in {s for s, _ in self.events.logged}
        self.calls.append(("step", position.step, logged))

    def after_epoch(self, position: Position, trainer: Stateful) -> None:
        self.calls.append(("epoch", position.step, True))

    def after_training(self, position: Position, trainer: Stateful) -> None:
        self.calls.append(("end", position.step, True))
        self.final_state = copy.deepcopy(trainer.state_dict())


def make_trainer(
    events: KeptEvents,
    topology: Topology = SINGLE_PROCESS,
    boundary: StepBoundary | None = None,
    watch: NonFiniteWatch | None = None,
    **settings: Any,
) -> Trainer:
    torch.manual_seed(1)  # the same initial weights and dropout stream for every trainer here
    loader = InMemoryLoader()
    return Trainer(
        TrainerConfig(**{"epochs": 2, "log_every_steps": 3, **settings}),
        SmallCNN(num_classes=10, width=4, dropout=0.5),
        optim=OptimConfig(),
        precision=Precision(amp=None, channels_last=False, pin_memory=False),
        topology=topology,
        mode=DataParallelMode(),
        train_loader=loader,
        val_loader=loader,
        events=events,
        boundary=boundary,
        watch=watch,
    )
