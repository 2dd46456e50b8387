"""The trainer on its own: the events it reports, the boundary it calls, and `state_dict` /
`load_state_dict` mid-epoch.

No process group, no files: a recorder and a boundary that keep what they are told, and an
in-memory loader that satisfies the `EpochLoader` protocol. The trainer knows neither `data/`
nor the run directory nor when checkpoints are written.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.in_memory import (
    KeptBoundary,
    KeptEvents,
    make_trainer,
)
from training.events import Position
from training.health import NonFiniteWatch
from training.topology import Topology


def test_the_trainer_reports_steps_logs_and_epochs_and_stops_at_every_boundary() -> None:
    events = KeptEvents()
    boundary = KeptBoundary(events)
    make_trainer(events, boundary=boundary).fit()
    assert [p.step for p in events.steps] == list(range(1, 9))
    assert [p.batch_in_epoch for p in events.steps] == [1, 2, 3, 4] * 2
    assert events.logged == [(3, {"loss", "lr"}), (6, {"loss", "lr"})]
    assert [epoch for epoch, _ in events.epochs] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "samples_per_s"} == (
        events.epochs[0][1]
    )
    # Every step is checked before it is reported (`reports` when numbers of the step follow:
    # log steps and epoch ends), and handed to `after_step` (where checkpoints are written) only
    # after its row was logged; then after every epoch, and once at the end.
    checks = [(step, reports) for kind, step, reports in boundary.calls if kind == "check"]
    assert checks == [(s, s in (3, 4, 6, 8)) for s in range(1, 9)]
    after = [(step, logged) for kind, step, logged in boundary.calls if kind == "step"]
    assert after == [(s, s in (3, 6)) for s in range(1, 9)]
    assert [kind for kind, _, _ in boundary.calls[:4]] == ["check", "step", "check", "step"]
    assert [(kind, step) for kind, step, _ in boundary.calls if kind in ("epoch", "end")] == [
        ("epoch", 4),
        ("epoch", 8),
        ("end", 8),
    ]


def test_state_dict_mid_epoch_then_load_state_dict_continues_bitwise() -> None:
    straight = make_trainer(KeptEvents())
    straight.fit()

    first_part = KeptBoundary()
    make_trainer(KeptEvents(), boundary=first_part, max_steps=6).fit()  # batch 2 of epoch 1
    state = first_part.final_state
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (6, 1, 2)

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
    first_part = KeptBoundary()
    make_trainer(KeptEvents(), boundary=first_part, max_steps=6).fit()
    state = first_part.final_state
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
    topology = Topology(0, 1, device.index or 0, 1, device, None)

    class SyncFreeUntilEpochEnd(KeptEvents):
        def step_finished(self, position: Position, batches_per_epoch: int, samples: int) -> None:
            super().step_finished(position, batches_per_epoch, samples)
            if position.batch_in_epoch == batches_per_epoch:
                torch.cuda.set_sync_debug_mode("default")

    trainer = make_trainer(
        SyncFreeUntilEpochEnd(),
        topology,
        watch=NonFiniteWatch(device),
        epochs=1,
        log_every_steps=1000,
        finite_check="log_steps",
    )
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.train_epoch()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.position.step == 4
