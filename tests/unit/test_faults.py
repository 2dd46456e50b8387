"""The pieces of fault handling on their own: the non-finite watch, the vote, the trainer's
reactions (with a recorder that keeps what it is told), and one-line errors from DataLoader
workers. The same faults with real processes and files are in tests/end_to_end/test_faults.py."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from data.config import DataConfig
from data.imagefolder import build_imagefolder
from engine.distributed import DistContext
from engine.events import Position
from engine.faults import DataFileError, Interrupted, NonFiniteLoss, OutputWriteFailed
from engine.health import GRADIENTS, LOSS, NOT_SEEN, NonFiniteWatch, RankHealth, Verdict
from tests.helpers.dataset_files import write_image_tree
from tests.unit.test_trainer import InMemoryLoader, KeptEvents, make_trainer

SINGLE = DistContext(0, 1, 0, 1, torch.device("cpu"), None)


def test_the_watch_keeps_the_first_bad_step_and_what_was_bad() -> None:
    watch = NonFiniteWatch(torch.device("cpu"))
    good = [torch.ones(3)]
    watch.record(1, torch.tensor(0.5), good)
    assert watch.read() == (NOT_SEEN, 0)
    watch.record(2, torch.tensor(0.5), [torch.tensor([1.0, math.inf])])
    watch.record(3, torch.tensor(math.nan), good)
    assert watch.read() == (2, GRADIENTS)  # the first one stays


def test_without_gradients_only_the_loss_counts_as_a_gradscaler_needs() -> None:
    """Under fp16 a GradScaler skips steps with inf gradients by design: not a failure."""
    watch = NonFiniteWatch(torch.device("cpu"))
    watch.record(1, torch.tensor(0.5), [])  # the scaler's skipped step: gradients not passed
    assert watch.read() == (NOT_SEEN, 0)
    watch.record(2, torch.tensor(math.inf), [])
    assert watch.read() == (2, LOSS)


def test_the_verdict_names_the_rank_whose_loss_broke() -> None:
    votes = Verdict(
        (
            RankHealth(5, GRADIENTS),  # DDP shared rank 1's NaN gradients with rank 0
            RankHealth(5, LOSS | GRADIENTS),
            RankHealth(NOT_SEEN, 0, signal.SIGTERM),
        )
    )
    assert votes.non_finite_step == 5
    assert votes.non_finite_description(0) == "non-finite loss at step 5 (epoch 0) on rank 1"
    assert votes.stop_signal == signal.SIGTERM and not votes.write_failed
    only_gradients = Verdict((RankHealth(7, GRADIENTS), RankHealth(7, GRADIENTS)))
    assert only_gradients.non_finite_description(1) == (
        "non-finite gradients at step 7 (epoch 1) on ranks 0, 1"
    )
    assert Verdict.gather(SINGLE, RankHealth(write_failed=True)).write_failed


class NaNLoader:
    """The unit tests' in-memory batches, with NaN images from global batch `bad` on."""

    def __init__(self, bad: int) -> None:
        self.inner = InMemoryLoader()
        self.bad = bad

    def epoch(self, epoch: int, start_batch: int = 0) -> Any:
        for index, (images, labels) in enumerate(self.inner.epoch(epoch, start_batch)):
            step = epoch * 4 + start_batch + index + 1
            yield (images * math.nan if step == self.bad else images), labels

    def batches_per_epoch(self) -> int:
        return 4


@pytest.mark.parametrize(("finite_check", "stops_after"), [("every_step", 3), ("log_steps", 4)])
def test_a_nan_stops_training_before_any_later_checkpoint(
    finite_check: str, stops_after: int
) -> None:
    events = KeptEvents()
    trainer = make_trainer(
        events, checkpoint_every_steps=2, log_every_steps=100, finite_check=finite_check
    )
    trainer.train_loader = NaNLoader(bad=3)
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at step 3 \(epoch 0\) on rank 0"):
        trainer.fit()
    assert trainer.position.step == stops_after  # log_steps: read before the checkpoint at 4
    assert [step for step, _ in events.checkpoints] == [2]


class FailingWrites(KeptEvents):
    def checkpoint_due(self, position: Position, state: dict[str, Any]) -> None:
        if position.step == 4:
            raise OutputWriteFailed("cannot write step-00000004.pt: No space left on device")
        super().checkpoint_due(position, state)


def test_a_failed_checkpoint_write_stops_training_there() -> None:
    events = FailingWrites()
    trainer = make_trainer(events, checkpoint_every_steps=2)
    with pytest.raises(OutputWriteFailed, match="No space left on device"):
        trainer.fit()
    assert trainer.position.step == 4 and [s for s, _ in events.checkpoints] == [2]


class Signalled:
    """What `engine.signals.StopSignals` exposes, with a signal already received."""

    received = signal.SIGTERM


def test_a_stop_signal_checkpoints_at_the_step_boundary_then_stops() -> None:
    events = KeptEvents()
    trainer = make_trainer(events)
    trainer.stop = Signalled()  # type: ignore[assignment]
    with pytest.raises(Interrupted, match=r"stopped by SIGTERM after step 1 \(epoch 0\)") as caught:
        trainer.fit()
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert [step for step, _ in events.checkpoints] == [1]


class VanishingFiles(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        raise DataFileError(f"cannot read image /data/{index}.png (train sample {index}): gone")


def test_an_error_in_a_dataloader_worker_stays_one_line() -> None:
    """DataLoader re-raises a worker's exception with the worker's traceback as its message."""
    loader = DataLoader(VanishingFiles(), batch_size=2, num_workers=1)
    with pytest.raises(DataFileError) as caught:
        next(iter(loader))
    assert str(caught.value) == "cannot read image /data/0.png (train sample 0): gone"


def test_an_image_truncated_after_the_scan_is_named_with_its_sample_index(tmp_path: Path) -> None:
    """The scan at start accepted the file; it is cut short later (a copy still in progress)."""
    root = write_image_tree(tmp_path, per_class=2)
    splits = build_imagefolder(DataConfig(name="imagefolder", root=str(root)))
    victim = root / "val" / "dog" / "1.jpg"
    victim.write_bytes(victim.read_bytes()[:60])
    with pytest.raises(DataFileError) as caught:
        splits.val[3]  # sorted: cat/0, cat/1, dog/0, dog/1
    assert str(caught.value).startswith(f"cannot read image {victim} (val sample 3): ")
    assert len(str(caught.value).splitlines()) == 1
