"""The pieces of fault handling on their own: the non-finite watch, the vote, the run session's
reactions (in this process, with a real recorder and checkpoint owner writing to a temporary
folder), and one-line errors from DataLoader workers. The same faults with real processes are
in tests/end_to_end/test_faults.py."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import seeding
from data.imagefolder import ImageFolderDataConfig, build_imagefolder
from foundation.faults import (
    DataFileError,
    Interrupted,
    NonFiniteLoss,
    NonFiniteState,
    OutputWriteFailed,
)
from runtime.assembly import RunPlan
from runtime.checkpoint.contents import load_checkpoint
from runtime.checkpoint.files import newest_complete
from runtime.checkpoint.owner import CheckpointConfig, Checkpointer
from runtime.checkpoint.resume import ResumePoint
from runtime.process_group import ProcessGroup
from runtime.recorder import RunIdentity, RunRecorder
from runtime.rundir import RunDirectory
from runtime.session import RunSession
from runtime.vote import RankHealth, Verdict
from runtime.writer_lock import claim_run_directory
from runtime.writes import WriteFailures
from tests.helpers.dataset_files import write_image_tree
from tests.helpers.in_memory import InMemoryLoader, KeptEvents, make_trainer
from training.determinism import DeterminismConfig, Precision
from training.events import Position
from training.health import GRADIENTS, LOSS, NOT_SEEN, STATE, NonFiniteWatch
from training.parallel.data_parallel import DataParallelMode
from training.topology import Topology
from training.trainer import Trainer, TrainerConfig

SINGLE = ProcessGroup(Topology.single())


def test_the_watch_keeps_the_first_bad_step_and_what_was_bad() -> None:
    watch = NonFiniteWatch(torch.device("cpu"))
    good = [torch.ones(3)]
    watch.record(1, torch.tensor(0.5), good)
    assert watch.read() == (NOT_SEEN, 0)
    watch.record(2, torch.tensor(0.5), [torch.tensor([1.0, math.inf])])
    watch.record(3, torch.tensor(math.nan), good)
    assert watch.read() == (2, GRADIENTS)  # the first one stays


def test_the_state_is_watched_too_and_named_last() -> None:
    watch = NonFiniteWatch(torch.device("cpu"))
    watch.record(1, torch.tensor(0.5), [torch.ones(2)], [torch.ones(3), torch.tensor([1e38])])
    assert watch.read() == (NOT_SEEN, 0)  # large but finite: no overflow in the check
    watch.record(2, torch.tensor(0.5), [torch.ones(2)], [torch.tensor([math.inf]), torch.ones(0)])
    assert watch.read() == (2, STATE)
    state_only = Verdict((RankHealth(2, STATE), RankHealth(2, STATE)))
    assert state_only.non_finite_description(1) == (
        "non-finite state (parameters, buffers or optimizer) at step 2 (epoch 1) on ranks 0, 1"
    )
    with pytest.raises(NonFiniteState):
        state_only.raise_if_non_finite(1)


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
    assert votes.non_finite_description(1) == "non-finite loss at step 5 (epoch 1) on rank 1"
    assert votes.stop_signal == signal.SIGTERM and not votes.write_failed
    only_gradients = Verdict((RankHealth(7, GRADIENTS), RankHealth(7, GRADIENTS)))
    assert only_gradients.non_finite_description(2) == (
        "non-finite gradients at step 7 (epoch 2) on ranks 0, 1"
    )
    assert Verdict.gather(SINGLE, RankHealth(write_failed=True)).write_failed
    assert TrainerConfig().finite_check == "every_step"


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


def session_around(
    trainer: Trainer,
    folder: Path,
    checkpoints: Checkpointer | None = None,
    every_steps: int | None = None,
):
    """A real run session around `trainer`: its recorder and checkpoint owner (a checkpoint
    every `every_steps`) write to `folder`, in this process (one rank, no process group)."""
    config = trainer.config
    run_dir = RunDirectory(folder / "run")
    identity = RunIdentity(
        config_name="unit",
        profile="debug",
        seed=0,
        argv=(),
        resolved={"trainer": config.model_dump(mode="json")},
        config_yaml="",
        determinism=DeterminismConfig(),
        hyperparameters={},
        epochs=config.epochs,
        git=None,
        seeds={},
    )
    precision = Precision(amp=None, channels_last=False, pin_memory=False)
    plan = seeding.data_parallel(0, 0)
    planned = RunPlan(plan, DataParallelMode(plan), precision, [])
    claim_run_directory(run_dir)
    recorder = RunRecorder(run_dir, identity, SINGLE, planned, None, WriteFailures())
    checkpoints = checkpoints or Checkpointer(run_dir, CheckpointConfig(every_steps=every_steps))
    checkpoints.expect({"unit": True}, ResumePoint(None, continuing=False))
    session = RunSession(config, "debug", SINGLE, recorder, checkpoints, trainer.watch)
    trainer.observe(recorder, session)
    return session, checkpoints


def saved_steps(checkpoints: Checkpointer) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in checkpoints.directory.glob("step-*.pt"))


@pytest.mark.parametrize(("finite_check", "stops_after"), [("every_step", 3), ("log_steps", 4)])
def test_a_nan_stops_training_before_any_later_checkpoint(
    tmp_path: Path, finite_check: str, stops_after: int
) -> None:
    trainer = make_trainer(
        KeptEvents(),
        watch=NonFiniteWatch(torch.device("cpu")),
        log_every_steps=100,
        finite_check=finite_check,
    )
    trainer.train_loader = NaNLoader(bad=3)
    _, checkpoints = session_around(trainer, tmp_path, every_steps=2)
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at step 3 \(epoch 1\) on rank 0"):
        trainer.fit()
    assert trainer.position.step == stops_after  # log_steps: read before the checkpoint at 4
    assert saved_steps(checkpoints) == [2]


def test_a_state_that_breaks_while_the_loss_is_finite_is_never_saved(tmp_path: Path) -> None:
    """The defect a hidden check found: with optim.lr=1e8 BatchNorm's running variance
    overflowed while the loss was still finite, and checkpoints held inf."""
    trainer = make_trainer(KeptEvents(), watch=NonFiniteWatch(torch.device("cpu")))
    _, checkpoints = session_around(trainer, tmp_path, every_steps=1)
    batchnorm = trainer.model.features[0][1]
    forwards = []

    def overflow_at_step_3(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        forwards.append(module.training)
        if sum(forwards) == 3:  # the third training forward: the loss stays finite
            batchnorm.running_var.data.mul_(math.inf)  # .data: autograd saved the buffer

    batchnorm.register_forward_hook(overflow_at_step_3)
    with pytest.raises(NonFiniteState, match=r"non-finite state .* at step 3 \(epoch 1\)"):
        trainer.fit()
    assert saved_steps(checkpoints) == [1, 2]
    for path in checkpoints.directory.glob("step-*.pt"):
        state = load_checkpoint(path)
        assert all(bool(torch.isfinite(t).all()) for t in state["model"].values())


def test_the_checkpoint_owner_refuses_a_broken_state_even_unwatched(tmp_path: Path) -> None:
    """Without the watch (a benchmark turns it off), the owner's own check still refuses."""
    trainer = make_trainer(KeptEvents())
    _, checkpoints = session_around(trainer, tmp_path, every_steps=1)
    step_once = trainer.train_step

    def step_then_overflow(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        loss = step_once(batches)
        if trainer.position.step + 1 == 2:
            trainer.model.head[3].weight.data[0, 0] = math.nan
        return loss

    trainer.train_step = step_then_overflow  # type: ignore[method-assign]
    with pytest.raises(
        NonFiniteState, match=r"refusing to save the checkpoint of step 2: model\.head\.3\.weight"
    ):
        trainer.fit()
    assert saved_steps(checkpoints) == [1]
    newest, _ = newest_complete(checkpoints.directory)
    assert newest is not None and newest.name == "step-00000001.pt"


class FullDisk(Checkpointer):
    def save(self, position: Position, state: dict[str, Any], write: bool) -> None:
        if position.step == 4:
            raise OSError(28, "No space left on device")
        super().save(position, state, write)


def test_a_failed_checkpoint_write_stops_training_there(tmp_path: Path) -> None:
    trainer = make_trainer(KeptEvents())
    run_dir = RunDirectory(tmp_path / "run")
    full_disk = FullDisk(run_dir, CheckpointConfig(every_steps=2))
    _, checkpoints = session_around(trainer, tmp_path, full_disk)
    with pytest.raises(OutputWriteFailed, match=r"step-00000004.pt: No space left on device"):
        trainer.fit()
    assert trainer.position.step == 4 and saved_steps(checkpoints) == [2]


def test_a_stop_signal_checkpoints_at_the_step_boundary_then_stops(tmp_path: Path) -> None:
    trainer = make_trainer(KeptEvents())
    session, checkpoints = session_around(trainer, tmp_path)
    session.signals.received = signal.SIGTERM
    with pytest.raises(Interrupted, match=r"stopped by SIGTERM after step 1 \(epoch 1\)") as caught:
        trainer.fit()
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert saved_steps(checkpoints) == [1]


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
    splits = build_imagefolder(ImageFolderDataConfig(root=str(root)))
    victim = root / "val" / "dog" / "1.jpg"
    victim.write_bytes(victim.read_bytes()[:60])
    with pytest.raises(DataFileError) as caught:
        splits.val[3]  # sorted: cat/0, cat/1, dog/0, dog/1
    assert str(caught.value).startswith(f"cannot read image {victim} (val sample 3): ")
    assert len(str(caught.value).splitlines()) == 1
