"""The training loop, its resumable state, and evaluation.

Why the state is (epoch, batch_in_epoch, step): with per-sample augmentation seeds and a sampler
that can start at an offset, these three numbers plus every rank's RNG state are everything needed
to continue an interrupted run exactly where it stopped, mid-epoch included.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from data.loaders import DataBundle
from engine.clock import seconds_since_process_start
from engine.config import Config
from engine.determinism import amp_dtype
from engine.distributed import DistContext, all_gather_objects, all_reduce_sum
from engine.optim import build_optimizer, build_scheduler
from seeding import capture_rng_state, restore_rng_state

if TYPE_CHECKING:
    from engine.outputs import RunOutputs


@dataclass
class EpochTotals:
    """Running sums of the current epoch on this rank (saved, so a resumed epoch reports alike)."""

    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    correct: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.int64))
    count: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.int64))

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {
            "loss_sum": self.loss_sum.cpu(),
            "correct": self.correct.cpu(),
            "count": self.count.cpu(),
        }


@dataclass
class TrainState:
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0


class Trainer:
    def __init__(
        self,
        config: Config,
        context: DistContext,
        model: nn.Module,
        data: DataBundle,
        outputs: RunOutputs,
    ) -> None:
        self.config = config
        self.context = context
        self.device = context.device
        self.data = data
        self.amp = amp_dtype(config.determinism, self.device)
        self.channels_last = config.determinism.channels_last and self.device.type == "cuda"
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.ddp: nn.Module = self.model
        if context.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = build_optimizer(config.optim, self.model)
        self.horizon = config.trainer.epochs * self.batches_per_epoch()
        self.scheduler, self.schedule = build_scheduler(self.optimizer, config.optim, self.horizon)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.state = TrainState()
        self.totals = self._new_totals()
        self.outputs = outputs
        self.last_eval: dict[str, float] | None = None
        self.last_eval_step = -1
        self.last_checkpoint_step = -1
        self.first_step_at: float | None = None  # seconds since process start

    # ----------------------------------------------------------------- schedule
    def batches_per_epoch(self) -> int:
        batches = self.data.train.batches_per_epoch()
        limit = self.config.trainer.limit_train_batches
        return batches if limit is None else min(batches, limit)

    def max_steps_reached(self) -> bool:
        limit = self.config.trainer.max_steps
        return limit is not None and self.state.step >= limit

    def finished(self) -> bool:
        return self.state.epoch >= self.config.trainer.epochs or self.max_steps_reached()

    # ----------------------------------------------------------------- loop
    def fit(self) -> None:
        while not self.finished():
            epoch_start = time.perf_counter()
            seen_before = int(self.totals.count)
            completed = self.train_epoch()
            if not completed:
                break
            elapsed = time.perf_counter() - epoch_start
            metrics = self.epoch_metrics(seen_before, elapsed)
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
            self.totals = self._new_totals()
            self.outputs.epoch_finished(self, metrics)
            self.outputs.save_checkpoint(self)
        if self.last_checkpoint_step != self.state.step:
            self.outputs.save_checkpoint(self)

    def train_epoch(self) -> bool:
        """Train until the epoch ends (True) or max_steps stops it (False)."""
        per_epoch = self.batches_per_epoch()
        every = self.config.trainer.checkpoint_every_steps
        self.ddp.train()
        batches = self.data.train.epoch(self.state.epoch, start_batch=self.state.batch_in_epoch)
        for images, labels in batches:
            if self.state.batch_in_epoch >= per_epoch:
                break
            loss = self.train_step(images, labels)
            if self.first_step_at is None:
                self.first_step_at = round(seconds_since_process_start(), 3)
            self.state.batch_in_epoch += 1
            self.state.step += 1
            if self.state.step % self.config.trainer.log_every_steps == 0:
                self.outputs.step_logged(self, float(loss))
            self._maybe_inject_fault()
            if self.max_steps_reached():
                return self.state.batch_in_epoch >= per_epoch
            if every and self.state.step % every == 0 and self.state.batch_in_epoch < per_epoch:
                self.outputs.save_checkpoint(self)
        return True

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images, labels = self._to_device(images, labels)
        with torch.autocast(
            self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None
        ):
            logits = self.ddp(images)
            loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.totals.loss_sum += loss.detach().double().cpu() * labels.numel()
            self.totals.correct += (logits.argmax(dim=1) == labels).sum().cpu()
            self.totals.count += labels.numel()
        return loss.detach()

    def _to_device(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        images = images.to(self.device, non_blocking=True, memory_format=memory_format)
        return images, labels.to(self.device, non_blocking=True)

    def _maybe_inject_fault(self) -> None:
        """Test-only switch: the last rank dies by SIGKILL once, at `trainer.fault_at_step`."""
        at = self.config.trainer.fault_at_step
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if (
            at == self.state.step
            and first_attempt
            and self.context.rank == self.context.world_size - 1
        ):
            os.kill(os.getpid(), signal.SIGKILL)

    def _new_totals(self) -> EpochTotals:
        return EpochTotals()

    # ----------------------------------------------------------------- metrics
    def epoch_metrics(self, seen_before: int, elapsed: float) -> dict[str, float]:
        sums = torch.stack(
            [
                self.totals.loss_sum,
                self.totals.correct.double(),
                self.totals.count.double(),
                torch.tensor(float(int(self.totals.count) - seen_before), dtype=torch.float64),
            ]
        ).to(self.device if self.context.backend == "nccl" else "cpu")
        loss_sum, correct, count, seen = all_reduce_sum(self.context, sums).tolist()
        evaluation = self.evaluate()
        return {
            "train_loss": loss_sum / max(count, 1.0),
            "train_acc": correct / max(count, 1.0),
            **evaluation,
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": seen / max(elapsed, 1e-9),
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation with rank 0's BatchNorm statistics on every rank (the ones that are saved)."""
        if self.last_eval is not None and self.last_eval_step == self.state.step:
            return self.last_eval
        if self.context.distributed:
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        for images, labels in self.data.val.epoch(0):
            images, labels = self._to_device(images, labels)
            with torch.autocast(
                self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None
            ):
                logits = self.model(images)
            sums[0] += F.cross_entropy(logits.float(), labels, reduction="sum").double()
            sums[1] += (logits.argmax(dim=1) == labels).sum()
            sums[2] += labels.numel()
        self.model.train()
        loss_sum, correct, count = all_reduce_sum(self.context, sums).tolist()
        self.last_eval = {
            "val_loss": loss_sum / max(count, 1.0),
            "val_acc": correct / max(count, 1.0),
        }
        self.last_eval_step = self.state.step
        return self.last_eval

    # ----------------------------------------------------------------- checkpoint state
    def checkpoint_payload(self, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
        """Collective: every rank contributes its RNG state; rank 0 gets the payload."""
        rng_states = all_gather_objects(self.context, capture_rng_state())
        totals = all_gather_objects(self.context, self.totals.as_dict())
        if not self.context.is_main:
            return None
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "schedule_horizon": self.horizon,
            "step": self.state.step,
            "epoch": self.state.epoch,
            "batch_in_epoch": self.state.batch_in_epoch,
            "epoch_totals": totals,
            "rng": rng_states,
            "world_size": self.context.world_size,
            "fingerprint": fingerprint,
        }

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue from a checkpoint already checked by `engine.resume.check_same_computation`."""
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.horizon = int(payload["schedule_horizon"])
        self.schedule.horizon = max(1, self.horizon)
        self.scheduler.load_state_dict(payload["scheduler"])
        if self.scaler is not None and payload["scaler"] is not None:
            self.scaler.load_state_dict(payload["scaler"])
        self.state = TrainState(payload["epoch"], payload["batch_in_epoch"], payload["step"])
        mine = payload["epoch_totals"][self.context.rank]
        self.totals = EpochTotals(mine["loss_sum"], mine["correct"], mine["count"])
        restore_rng_state(payload["rng"][self.context.rank])
        self.last_checkpoint_step = self.state.step
