"""The trainer on its own: the events it reports, and `state_dict` / `load_state_dict` mid-epoch.

No process group, no files: a recorder that keeps what it is told, and an in-memory loader that
satisfies the `EpochLoader` protocol. The trainer knows neither `data/` nor the run directory.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from engine.determinism import Precision
from engine.distributed import DistContext
from engine.events import Position
from engine.optim import OptimConfig
from engine.trainer import Trainer, TrainerConfig
from models.smallcnn import SmallCNN

SINGLE_PROCESS = DistContext(0, 1, 0, 1, torch.device("cpu"), None)


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
        self.checkpoints: list[tuple[int, dict[str, Any]]] = []

    def step_finished(self, position: Position, batches_per_epoch: int, samples: int) -> None:
        assert batches_per_epoch == 4 and samples == 8
        self.steps.append(position)

    def step_logged(self, position: Position, values: dict[str, float]) -> None:
        self.logged.append((position.step, set(values)))

    def epoch_finished(self, position: Position, metrics: dict[str, float]) -> None:
        self.epochs.append((position.epoch, set(metrics)))

    def checkpoint_due(self, position: Position, state: dict[str, Any]) -> None:
        self.checkpoints.append((position.step, copy.deepcopy(state)))


def make_trainer(
    events: KeptEvents, context: DistContext = SINGLE_PROCESS, **settings: Any
) -> Trainer:
    torch.manual_seed(1)  # the same initial weights and dropout stream for every trainer here
    loader = InMemoryLoader()
    return Trainer(
        TrainerConfig(**{"epochs": 2, "log_every_steps": 3, **settings}),
        OptimConfig(),
        Precision(amp=None, channels_last=False, pin_memory=False),
        context,
        SmallCNN(num_classes=10, width=4, dropout=0.5),
        loader,
        loader,
        events,
    )


def test_the_trainer_reports_steps_logs_epochs_and_checkpoints_through_its_events() -> None:
    events = KeptEvents()
    make_trainer(events, checkpoint_every_steps=2).fit()
    assert [p.step for p in events.steps] == list(range(1, 9))
    assert [p.batch_in_epoch for p in events.steps] == [1, 2, 3, 4] * 2
    assert events.logged == [(3, {"loss", "lr"}), (6, {"loss", "lr"})]
    assert [epoch for epoch, _ in events.epochs] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "samples_per_s"} == (
        events.epochs[0][1]
    )
    # every 2 steps inside an epoch, and at each epoch end (never twice for one step)
    assert [step for step, _ in events.checkpoints] == [2, 4, 6, 8]


def test_state_dict_mid_epoch_then_load_state_dict_continues_bitwise() -> None:
    straight = make_trainer(KeptEvents())
    straight.fit()

    first_part = KeptEvents()
    make_trainer(first_part, max_steps=6).fit()  # stops after batch 2 of epoch 1
    step, state = first_part.checkpoints[-1]
    assert (step, state["epoch"], state["batch_in_epoch"]) == (6, 1, 2)

    resumed = make_trainer(KeptEvents())
    torch.manual_seed(12345)  # whatever the global RNG holds now, the state brings its own back
    resumed.load_state_dict(state)
    resumed.fit()
    assert resumed.position == straight.position == Position(2, 0, 8)
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert resumed.evaluate() == straight.evaluate()


def test_without_the_rng_state_the_continuation_differs() -> None:
    """The check above can fail: drop the dropout stream's state and the weights differ."""
    straight = make_trainer(KeptEvents())
    straight.fit()
    first_part = KeptEvents()
    make_trainer(first_part, max_steps=6).fit()
    _, state = first_part.checkpoints[-1]
    resumed = make_trainer(KeptEvents())
    resumed.load_state_dict(state)
    torch.manual_seed(12345)  # overwrite the restored dropout stream
    resumed.fit()
    weights = straight.model.state_dict()
    assert any(not torch.equal(weights[n], t) for n, t in resumed.model.state_dict().items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_between_log_steps_on_cuda() -> None:
    """Steps that log nothing must not make the CPU wait for the GPU (no .item(), .cpu(), ...),
    with production's non-finite check (read at log steps and epoch ends only).

    `set_sync_debug_mode("error")` turns every synchronising CUDA call into an exception; it is
    switched off when the epoch's last step is reported, before the epoch-end reads."""
    device = torch.device("cuda", torch.cuda.current_device())
    context = DistContext(0, 1, device.index or 0, 1, device, None)

    class SyncFreeUntilEpochEnd(KeptEvents):
        def step_finished(self, position: Position, batches_per_epoch: int, samples: int) -> None:
            super().step_finished(position, batches_per_epoch, samples)
            if position.batch_in_epoch == batches_per_epoch:
                torch.cuda.set_sync_debug_mode("default")

    trainer = make_trainer(
        SyncFreeUntilEpochEnd(), context, epochs=1, log_every_steps=1000, finite_check="log_steps"
    )
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.train_epoch()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.position.step == 4
