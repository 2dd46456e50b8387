"""One training step, two strategies, chosen once per run (`parallel_mode`).

- `DataParallelMode` / `DataParallelStep`: the ordinary step. One forward and backward of this
  rank's batch, through DDP when there are several processes (its all_reduce averages the
  gradients); metrics are summed over ranks.
- `InvariantMode` / `InvariantStep` (training/invariance.py): the same weights for any world
  size; gradients, BatchNorm statistics and metrics are combined in one fixed order.

Why strategies: the trainer asks a step for the gradients of a batch and for its sums, and never
branches on the mode; what differs between the modes lives in one class each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.determinism import Precision
from training.topology import Topology, all_reduce_sum


class StepResult(NamedTuple):
    loss: torch.Tensor  # mean loss of the step's batch (0-d, on the device)
    correct: torch.Tensor  # correct predictions (0-d, on the device)
    samples: int  # samples the sums above cover


class TrainingStep(Protocol):
    """Computes gradients and sums; the trainer applies the optimizer."""

    def gradients(
        self, step: int, images: torch.Tensor, labels: torch.Tensor, backward: Backward
    ) -> StepResult:
        """Leave this step's gradients in `.grad` (through `backward`, which scales under a
        GradScaler) and return the step's loss and counts."""
        ...

    def epoch_sums(self, sums: torch.Tensor) -> list[float]:
        """This rank's [loss_sum, correct, count, seen] (float64) as the run's totals."""
        ...

    def evaluation_sums(self, per_batch: list[torch.Tensor]) -> list[float]:
        """This rank's validation [loss_sum, correct, count] per batch, as the run's totals."""
        ...

    def totals_to_continue(self, rank: int) -> int:
        """Which saved rank's running sums this rank continues from on resume."""
        ...


Backward = Callable[[torch.Tensor], None]


class ParallelMode(Protocol):
    """What depends on the mode outside the step itself (chosen once, in train.py)."""

    eval_chunk: int | None  # validation cut into fixed chunks of this size, or None

    def notes(self) -> list[str]:
        """Lines for the determinism report."""
        ...

    def describe(self) -> dict[str, Any] | None:
        """The mode's layout for the manifest (None: the ordinary mode)."""
        ...

    def fingerprint_world_size(self, world_size: int) -> int | str:
        """The world size as a resumed checkpoint must match it."""
        ...

    def prepare(self, device: torch.device) -> None:
        """Process-wide settings the mode needs before anything is computed."""
        ...

    def training_step(
        self, model: nn.Module, topology: Topology, precision: Precision
    ) -> TrainingStep: ...


class DataParallelMode:
    """Ordinary data parallelism: the results are those of this world size."""

    eval_chunk = None

    def notes(self) -> list[str]:
        return []

    def describe(self) -> dict[str, Any] | None:
        return None

    def fingerprint_world_size(self, world_size: int) -> int | str:
        return world_size

    def prepare(self, device: torch.device) -> None:
        return None

    def training_step(
        self, model: nn.Module, topology: Topology, precision: Precision
    ) -> TrainingStep:
        return DataParallelStep(model, topology, precision)


class DataParallelStep:
    def __init__(self, model: nn.Module, topology: Topology, precision: Precision) -> None:
        self.topology = topology
        self.precision = precision
        self.forward: nn.Module = model
        if topology.distributed:
            device_ids = [topology.device.index] if topology.device.type == "cuda" else None
            self.forward = DistributedDataParallel(model, device_ids=device_ids)

    def gradients(
        self, step: int, images: torch.Tensor, labels: torch.Tensor, backward: Backward
    ) -> StepResult:
        amp = self.precision.amp
        device_type = self.topology.device.type
        with torch.autocast(device_type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = self.forward(images)
            loss = F.cross_entropy(logits, labels)
        backward(loss)
        with torch.no_grad():
            correct = (logits.argmax(dim=1) == labels).sum()
        return StepResult(loss.detach(), correct, labels.numel())

    def epoch_sums(self, sums: torch.Tensor) -> list[float]:
        on_device = self.topology.backend == "nccl"
        return all_reduce_sum(self.topology, sums.to(sums.device if on_device else "cpu")).tolist()

    def evaluation_sums(self, per_batch: list[torch.Tensor]) -> list[float]:
        sums = torch.zeros(3, dtype=torch.float64, device=self.topology.device)
        for batch in per_batch:
            sums += batch
        return all_reduce_sum(self.topology, sums).tolist()

    def totals_to_continue(self, rank: int) -> int:
        return rank
