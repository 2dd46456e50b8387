"""train.py with two test-only models registered, to prove the checks can fail.

- `planted_put`: the small CNN plus a `Tensor.put_` in forward, an op with no deterministic
  implementation (it raises under the debug profile even on CPU; eval must record it).
- PLANTED_FAIL_SEED=k makes the run with `--seed k` fail (benchmark test); with
  PLANTED_FAIL_ARG=token too, only a run whose arguments hold that token (one variant of a
  comparison).
- `planted_divergence`: the small CNN whose logits get noise from os.urandom from the
  PLANTED_DIVERGE_AT-th training forward on: two runs agree until then and differ after.
- PLANTED_SIGKILL_AT_STEP=k: the last rank kills itself with SIGKILL right after optimizer step k,
  on torchrun's first attempt only (resume and restart tests). Fault injection lives here, not in
  the training core or its config.
- PLANTED_SIGKILL_IN_SAVE=k: rank 0 kills itself with SIGKILL inside the sharded save of step k,
  when every rank's shards are written and DCP's index is not (first attempt).
- PLANTED_SIGSTOP_AT_STEP=k: the same, with SIGSTOP: the rank stops answering (first attempt).
- PLANTED_NAN_AT_STEP=k (PLANTED_NAN_RANK=r, default the last rank): the images of step k on
  rank r become NaN, as a corrupt input would.
- PLANTED_SIGNAL_AT_STEP=k, PLANTED_SIGNAL=TERM|INT|HUP, PLANTED_SIGNAL_TO=self|launcher,
  PLANTED_SIGNAL_TIMES=n, PLANTED_SIGNAL_INTERVAL=s: after step k, rank PLANTED_SIGNAL_RANK
  (default the last) sends the signal n times, s seconds apart, to itself, or to its parent
  (torchrun, as SLURM would).
- PLANTED_SLEEP_PER_STEP=s: every rank sleeps s seconds after each step (a slower job, the same
  numbers: time for a test to signal it while it runs).
- PLANTED_REMOVE_AT_STEP=k, PLANTED_REMOVE_FILE=path: rank 0 deletes the file after step k.
- PLANTED_FORGET_EMA=1: a resume does not restore the EMA of the weights (it keeps the fresh
  copy of the initial weights): the bug `make verify`'s resume row must catch.
- PLANTED_FAULT_LOG=path: each rank whose training stops on a fault appends "rank kind step" to
  the file (proof that every rank decided to stop by itself, and where).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.distributed.checkpoint import FileSystemWriter

from foundation.faults import TrainingFault
from foundation.process import process_launch
from models import register_model
from models.smallcnn import SmallCNN, SmallCNNConfig
from runtime.process_group import ProcessGroup
from runtime.recorder import RunRecorder
from training.ema import WeightAverage
from training.events import Position
from training.trainer import Trainer


class PutModel(SmallCNN):
    def forward(self, images: Tensor) -> Tensor:
        scratch = torch.zeros(4, device=images.device)
        scratch.put_(
            torch.tensor([1], device=images.device), torch.tensor([1.0], device=images.device)
        )
        return super().forward(images)


class DivergingModel(SmallCNN):
    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.calls = 0
        self.diverge_at = int(os.environ.get("PLANTED_DIVERGE_AT", "5"))

    def forward(self, images: Tensor) -> Tensor:
        logits = super().forward(images)
        if self.training:
            self.calls += 1
            if self.calls >= self.diverge_at:
                noise = np.frombuffer(os.urandom(4 * logits.numel()), dtype=np.uint32) / 2**32
                # 0.05: the loss of that step moves by about 2e-3 (1e-3 once moved it by less
                # than a float32 step, and the divergence showed a step later).
                logits = logits + 0.05 * torch.from_numpy(noise.astype(np.float32)).view_as(logits)
        return logits


class PutConfig(SmallCNNConfig):
    name: Literal["planted_put"] = "planted_put"  # type: ignore[assignment]


class DivergingConfig(SmallCNNConfig):
    name: Literal["planted_divergence"] = "planted_divergence"  # type: ignore[assignment]


@register_model("planted_put", PutConfig)
def _put(config: PutConfig, num_classes: int, image_size: int) -> PutModel:
    return PutModel(num_classes, config.width, config.dropout)


@register_model("planted_divergence", DivergingConfig)
def _diverging(config: DivergingConfig, num_classes: int, image_size: int) -> DivergingModel:
    return DivergingModel(num_classes, config.width, config.dropout)


def _fail_if_planted() -> None:
    """PLANTED_FAIL_SEED=k: the run with --seed k fails with a one-line error (benchmark test)."""
    planted = os.environ.get("PLANTED_FAIL_SEED")
    only_with = os.environ.get("PLANTED_FAIL_ARG")
    arguments = sys.argv[1:]
    if (
        planted is not None
        and "--seed" in arguments
        and arguments[arguments.index("--seed") + 1] == planted
        and (only_with is None or only_with in arguments)
    ):
        print(f"error: planted failure for seed {planted}", file=sys.stderr)
        sys.exit(2)


def _planted_step(name: str) -> int | None:
    value = os.environ.get(name)
    return None if value is None else int(value)


def _planted_rank(name: str, world_size: int) -> int:
    return int(os.environ.get(name, world_size - 1))


def _after_each_step(position: Position, group: ProcessGroup) -> None:
    """The faults planted after an optimizer step (the recorder's per-step event)."""
    first_attempt = process_launch().restart_attempt == 0
    last_rank = group.rank == group.world_size - 1
    for name, number in (("SIGKILL", signal.SIGKILL), ("SIGSTOP", signal.SIGSTOP)):
        at = _planted_step(f"PLANTED_{name}_AT_STEP")
        if position.step == at and last_rank and first_attempt:
            os.kill(os.getpid(), number)
    at = _planted_step("PLANTED_SIGNAL_AT_STEP")
    if position.step == at and group.rank == _planted_rank("PLANTED_SIGNAL_RANK", group.world_size):
        number = signal.Signals["SIG" + os.environ.get("PLANTED_SIGNAL", "TERM")]
        target = os.getppid() if os.environ.get("PLANTED_SIGNAL_TO") == "launcher" else os.getpid()
        interval = float(os.environ.get("PLANTED_SIGNAL_INTERVAL", "0"))
        for time_index in range(int(os.environ.get("PLANTED_SIGNAL_TIMES", "1"))):
            if time_index:
                time.sleep(interval)
            os.kill(target, number)
    pause = os.environ.get("PLANTED_SLEEP_PER_STEP")
    if pause:
        time.sleep(float(pause))
    at = _planted_step("PLANTED_REMOVE_AT_STEP")
    if position.step == at and group.rank == 0:
        os.remove(os.environ["PLANTED_REMOVE_FILE"])


def _plant_step_faults() -> None:
    step_finished = RunRecorder.step_finished

    def step_finished_then_fault(
        self: RunRecorder, position: Position, batches_per_epoch: int, samples: int
    ) -> None:
        step_finished(self, position, batches_per_epoch, samples)
        _after_each_step(position, self.group)

    RunRecorder.step_finished = step_finished_then_fault  # type: ignore[method-assign]


def _log_faults() -> None:
    log = os.environ.get("PLANTED_FAULT_LOG")
    if log is None:
        return
    fit = Trainer.fit

    def fit_logging_faults(self: Trainer) -> None:
        try:
            fit(self)
        except TrainingFault as fault:
            with open(log, "a") as stream:
                stream.write(f"{self.topology.rank} {fault.kind} {self.position.step}\n")
            raise

    Trainer.fit = fit_logging_faults  # type: ignore[method-assign]


def _plant_nan() -> None:
    """PLANTED_NAN_AT_STEP=k: NaN images at step k on one rank (a corrupt input)."""
    at = _planted_step("PLANTED_NAN_AT_STEP")
    if at is None:
        return
    train_step = Trainer.train_step

    def train_step_with_nan(self: Trainer, batches: list[tuple[Tensor, Tensor]]) -> Tensor:
        rank = _planted_rank("PLANTED_NAN_RANK", self.topology.world_size)
        if self.position.step + 1 == at and self.topology.rank == rank:
            batches = [(images * float("nan"), labels) for images, labels in batches]
        return train_step(self, batches)

    Trainer.train_step = train_step_with_nan  # type: ignore[method-assign]


def _kill_inside_sharded_save() -> None:
    at = _planted_step("PLANTED_SIGKILL_IN_SAVE")
    if at is None or process_launch().restart_attempt > 0:
        return
    finish = FileSystemWriter.finish  # DCP's last act, on rank 0: the index

    def finish_or_die(self: FileSystemWriter, *args: object, **kwargs: object) -> None:
        if f"step-{at:08d}" in Path(self.path).name:
            os.kill(os.getpid(), signal.SIGKILL)
        finish(self, *args, **kwargs)  # type: ignore[arg-type]

    FileSystemWriter.finish = finish_or_die  # type: ignore[method-assign]


def _forget_ema() -> None:
    if os.environ.get("PLANTED_FORGET_EMA") == "1":
        WeightAverage.load_state_dict = lambda self, state: None  # type: ignore[method-assign]


if __name__ == "__main__":
    _fail_if_planted()
    _plant_step_faults()
    _plant_nan()
    _forget_ema()
    _kill_inside_sharded_save()
    _log_faults()
    sys.argv = ["train.py", *sys.argv[1:]]
    runpy.run_path("train.py", run_name="__main__")
