"""One training step, two strategies, chosen once per run (`parallel_mode`).

- `DataParallelMode` / `DataParallelStep`: the ordinary step. A forward and backward of each of
  this rank's batches (`trainer.accumulate_steps` of them), through DDP when there are several
  processes: its all_reduce averages the gradients, once, after the last batch (`no_sync` on the
  others); metrics are summed over ranks.
- `InvariantMode` / `InvariantStep` (training/parallel/invariant.py): the same weights for any world
  size; gradients, BatchNorm statistics and metrics are combined in one fixed order.

Why strategies: the trainer asks a step for the gradients of a batch and for its sums, and never
branches on the mode; what differs between the modes lives in one class each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import seeding
from seeding import SeedPlan, restore_rng_state
from training.parallel.layout import StateLayout
from training.parallel.optimizer_partition import OptimizerPartition
from training.parallel.protocol import Backward, Batch, StepParts, StepResult, TrainingStep
from training.topology import Topology, all_reduce_sum


class DataParallelMode:
    """Ordinary data parallelism: the results are those of this world size. `per_rank_files`:
    checkpoints as directories (`parallel.shard` on one process: the format a sharded run of
    the same config writes at any world size)."""

    eval_chunk = None

    def __init__(self, plan: SeedPlan | None = None, per_rank_files: bool = False) -> None:
        self.plan = plan if plan is not None else seeding.data_parallel(0, 0)
        self.state_layout = StateLayout(per_rank_files=per_rank_files)

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

    def optimizer_partition(
        self, optimizer: torch.optim.Optimizer, topology: Topology
    ) -> OptimizerPartition | None:
        return None

    def training_step(self, parts: StepParts) -> TrainingStep:
        return DataParallelStep(parts)


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
        """On another number of replicas (a fixed global batch: runtime/checkpoint/owner.py allows
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
    def __init__(self, parts: StepParts) -> None:
        topology, model = parts.topology, parts.model
        self.parts = parts
        self.topology = topology
        self.forward: nn.Module = parts.compiled(model)
        self.ddp: DistributedDataParallel | None = None
        if topology.distributed:  # around the compiled module: eager DDP's buckets and order
            device_ids = [topology.device.index] if topology.device.type == "cuda" else None
            self.forward = self.ddp = DistributedDataParallel(self.forward, device_ids=device_ids)

    def gradients(self, step: int, batches: list[Batch], backward: Backward) -> StepResult:
        """DDP reduces after the last batch (`no_sync` on the others)."""

        def reduces_after(micro: int, last: bool) -> contextlib.AbstractContextManager[None]:
            return self.ddp.no_sync() if self.ddp is not None and not last else _nothing()

        slot_of = self.parts.slot_of(self.topology.rank)
        return weighted_batches(
            step, batches, backward, self.parts, self.forward, slot_of, reduces_after
        )


def _nothing() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def weighted_batches(
    step: int,
    batches: list[Batch],
    backward: Backward,
    parts: StepParts,
    forward: Callable[[torch.Tensor], torch.Tensor],
    slot_of: Callable[[int], int],
    around: Callable[[int, bool], contextlib.AbstractContextManager[None]] = lambda m, last: (
        _nothing()
    ),
) -> StepResult:
    """The step of every data-parallel strategy: each batch's loss, weighted by its share of
    the step's samples (a short last batch of an epoch counts for what it holds), backwards,
    inside `around(micro, last)` (where a strategy holds back or lets its gradient exchange
    run); its MixUp/CutMix draws keyed by `slot_of(micro)`."""
    objective, amp, device_type = parts.objective, parts.precision.amp, parts.topology.device.type
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
