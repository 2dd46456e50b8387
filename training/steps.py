"""One training step, two strategies, chosen once per run (`parallel_mode`).

- `DataParallelMode` / `DataParallelStep`: the ordinary step. A forward and backward of each of
  this rank's batches (`trainer.accumulate_steps` of them), through DDP when there are several
  processes: its all_reduce averages the gradients, once, after the last batch (`no_sync` on the
  others); metrics are summed over ranks.
- `InvariantMode` / `InvariantStep` (training/invariance.py): the same weights for any world
  size; gradients, BatchNorm statistics and metrics are combined in one fixed order.

Why strategies: the trainer asks a step for the gradients of a batch and for its sums, and never
branches on the mode; what differs between the modes lives in one class each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from seeding import restore_rng_state
from training.determinism import Precision
from training.objective import Objective
from training.optimizer_shards import OptimizerShards
from training.topology import Topology, all_reduce_sum

Batch = tuple[torch.Tensor, torch.Tensor]  # images, labels


class StepResult(NamedTuple):
    loss: torch.Tensor  # mean loss of the step's batches (0-d, on the device)
    correct: torch.Tensor  # correct predictions (0-d, on the device)
    samples: int  # samples the sums above cover


class TrainingStep(Protocol):
    """Computes gradients and sums; the trainer applies the optimizer."""

    def gradients(self, step: int, batches: list[Batch], backward: Backward) -> StepResult:
        """Add this step's gradients to `.grad` (cleared by the trainer; through `backward`,
        which scales under a GradScaler) and return the step's loss and counts."""
        ...

    def epoch_sums(self, sums: torch.Tensor) -> list[float]:
        """This rank's [loss_sum, correct, count, seen] (float64) as the run's totals."""
        ...

    def evaluation_sums(self, per_batch: list[torch.Tensor]) -> list[float]:
        """This rank's validation [loss_sum, correct, count] per batch, as the run's totals."""
        ...

    def totals_to_continue(
        self, rank: int, saved_world_size: int, saved_replicas: int
    ) -> list[int]:
        """Which saved ranks' running sums this rank continues from on resume (added)."""
        ...

    def restore_rng(self, states: list[Any], rank: int, step: int, saved_replicas: int) -> None:
        """Restore this rank's RNG states from the checkpoint's (one per saved rank), resuming
        at optimizer `step`."""
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

    def data_replicas(self, topology: Topology) -> tuple[int, int]:
        """(how many shards the data is split into, this rank's shard)."""
        ...

    def prepare(self, device: torch.device) -> None:
        """Process-wide settings the mode needs before anything is computed."""
        ...

    def optimizer_shards(
        self, optimizer: torch.optim.Optimizer, topology: Topology
    ) -> OptimizerShards | None:
        """The optimizer state split over the ranks (training/optimizer_shards.py), or None:
        the optimizer updates every parameter it was given."""
        ...

    def training_step(
        self,
        model: nn.Module,
        topology: Topology,
        precision: Precision,
        objective: Objective,
        accumulate_steps: int,
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

    def data_replicas(self, topology: Topology) -> tuple[int, int]:
        return topology.world_size, topology.rank

    def prepare(self, device: torch.device) -> None:
        return None

    def optimizer_shards(
        self, optimizer: torch.optim.Optimizer, topology: Topology
    ) -> OptimizerShards | None:
        return None

    def training_step(
        self,
        model: nn.Module,
        topology: Topology,
        precision: Precision,
        objective: Objective,
        accumulate_steps: int,
    ) -> TrainingStep:
        return DataParallelStep(model, topology, precision, objective, accumulate_steps)


class ReplicaTotals:
    """What every data-parallel step shares beside its gradients: each rank is one replica, its
    sums are added over all ranks, and on resume it continues its own sums and RNG states."""

    topology: Topology

    def epoch_sums(self, sums: torch.Tensor) -> list[float]:
        return sum_over_ranks(self.topology, sums)

    def evaluation_sums(self, per_batch: list[torch.Tensor]) -> list[float]:
        return sum_over_ranks(self.topology, batch_sums(per_batch, self.topology.device))

    def totals_to_continue(
        self, rank: int, saved_world_size: int, saved_replicas: int
    ) -> list[int]:
        """On another number of replicas (a fixed global batch: runtime/checkpoints.py allows
        it), rank 0 continues the sums of every saved replica, which the epoch adds over the
        ranks: the resumed epoch still counts each sample once."""
        if saved_replicas != self.topology.world_size:
            return list(range(saved_world_size)) if rank == 0 else []
        return [self._saved_rank(rank, saved_world_size)]

    def restore_rng(self, states: list[Any], rank: int, step: int, saved_replicas: int) -> None:
        """On another number of replicas, a rank the checkpoint had continues its own streams
        and a new rank keeps the fresh ones of its rank (never a copy of another rank's: two
        replicas would draw the same dropout masks)."""
        if saved_replicas != self.topology.world_size:
            restore_own_rng(states, rank)
            return
        restore_own_rng(states, self._saved_rank(rank, len(states)))

    def _saved_rank(self, rank: int, saved_world_size: int) -> int:
        """The saved rank of this replica. A checkpoint of a dp x tp run has tp ranks per
        replica (the same dp degree: the fingerprint checks it): replica r continues from its
        first shard, r * tp, never from another replica's shard."""
        world_size = self.topology.world_size
        shards = saved_world_size // world_size if saved_world_size % world_size == 0 else 1
        return rank * max(1, shards)


class DataParallelStep(ReplicaTotals):
    def __init__(
        self,
        model: nn.Module,
        topology: Topology,
        precision: Precision,
        objective: Objective,
        accumulate_steps: int = 1,
    ) -> None:
        self.topology = topology
        self.precision = precision
        self.objective = objective
        self.accumulate_steps = accumulate_steps
        self.forward: nn.Module = model
        self.ddp: DistributedDataParallel | None = None
        if topology.distributed:
            device_ids = [topology.device.index] if topology.device.type == "cuda" else None
            self.forward = self.ddp = DistributedDataParallel(model, device_ids=device_ids)

    def gradients(self, step: int, batches: list[Batch], backward: Backward) -> StepResult:
        """DDP reduces after the last batch (`no_sync` on the others)."""

        def reduces_after(micro: int, last: bool) -> contextlib.AbstractContextManager[None]:
            return self.ddp.no_sync() if self.ddp is not None and not last else _nothing()

        return weighted_batches(
            step,
            batches,
            backward,
            forward=self.forward,
            objective=self.objective,
            precision=self.precision,
            device_type=self.topology.device.type,
            slot_of=lambda micro: self.topology.rank * self.accumulate_steps + micro,
            around=reduces_after,
        )


def _nothing() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def weighted_batches(
    step: int,
    batches: list[Batch],
    backward: Backward,
    *,
    forward: Callable[[torch.Tensor], torch.Tensor],
    objective: Objective,
    precision: Precision,
    device_type: str,
    slot_of: Callable[[int], int],
    around: Callable[[int, bool], contextlib.AbstractContextManager[None]] = lambda m, last: (
        _nothing()
    ),
) -> StepResult:
    """The step of every data-parallel strategy: each batch's loss, weighted by its share of
    the step's samples (a short last batch of an epoch counts for what it holds), backwards,
    inside `around(micro, last)` (where a strategy holds back or lets its gradient exchange
    run); its MixUp/CutMix draws keyed by `slot_of(micro)`."""
    amp = precision.amp
    total = sum(labels.numel() for _, labels in batches)
    losses, corrects, samples = [], [], 0
    for micro, (images, labels) in enumerate(batches):
        inputs, targets = objective.inputs(step, slot_of(micro), images, labels)
        with around(micro, micro == len(batches) - 1):
            with torch.autocast(device_type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = forward(inputs)
                loss = objective.loss(logits, targets)
            share = labels.numel() / total
            backward(loss if len(batches) == 1 else loss * share)
        with torch.no_grad():
            losses.append(loss.detach() if len(batches) == 1 else loss.detach() * share)
            corrects.append(objective.correct(logits, targets))
        samples += labels.numel()
    mean_loss = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
    correct = corrects[0] if len(corrects) == 1 else torch.stack(corrects).sum()
    return StepResult(mean_loss, correct, samples)


def batch_sums(per_batch: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Validation's per-batch [loss_sum, correct, count], added up on this rank."""
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for batch in per_batch:
        sums += batch
    return sums


def sum_over_ranks(
    topology: Topology, sums: torch.Tensor, group: dist.ProcessGroup | None = None
) -> list[float]:
    """Sums over the ranks (of `group`: the replicas of a dp x tp mesh), on the host."""
    sums = sums if topology.backend == "nccl" else sums.to("cpu")
    if group is not None:
        dist.all_reduce(sums, group=group)
        return sums.tolist()
    return all_reduce_sum(topology, sums).tolist()


def restore_own_rng(states: list[Any], rank: int) -> None:
    """This rank's saved RNG states, if the checkpoint has a rank of this number."""
    if rank < len(states):
        restore_rng_state(states[rank])
