"""World-size-invariant training: the same weights, bit for bit, on 1, 2, 4, ... processes.

What depends on the number of processes W in ordinary data-parallel training, and what this
mode does instead (each piece was measured to be necessary):

- The per-rank batch shape: a step is a global batch of B samples cut into M = B / b
  micro-batches of fixed size b, in global order; rank r computes the contiguous block of M / W
  micro-batches starting at r * M / W. Every forward and backward has the same shape for any W.
- The summation order: all_reduce adds in an order that depends on W (and on the algorithm).
  Here per-micro-batch gradients are added over one balanced binary tree on [0, M), split at the
  midpoint: each rank sums its own block, which is a node of that tree, locally; the partial sums
  are exchanged (training/parallel/exchange.py: an all_to_all of shards, each rank adds its shard over the
  tree's upper levels, an all_gather of the results; both move bytes and add nothing) with the
  traffic of a ring all-reduce. The same tree gives the same bits whatever W is.
- Forward randomness: dropout for micro-batch j of step k comes from the plan's `microbatch`
  stream at (k, j), never from a per-rank stream; MixUp/CutMix of that micro-batch from the
  `mix` stream at (k, j) (training/objective.py).
- Gradient accumulation (`trainer.accumulate_steps` = A): a step is A global batches, one after
  the other; each is summed over the tree and exchanged as above, and the A sums are added in
  batch order (micro-batch j of batch a is micro-batch a * M + j of the step). Every term and
  the order of the additions are the same for any W.
- BatchNorm running statistics: each micro-batch normalises with its own statistics; the running
  statistics are snapshotted before the step, each micro-batch's mean and variance are captured
  (momentum 1 turns the running buffers into exactly that micro-batch's statistics) and gathered,
  then every rank replays the updates for micro-batches 0 ... M-1 in order.
- Threads: on CPU the intra-op thread count changes the result of convolutions and matmuls, so
  it is pinned (`INTRA_OP_THREADS`) whatever W.

The layout of the micro-batches is training/parallel/micro_batches.py, the BatchNorm replay
training/parallel/batchnorm_replay.py; this module is the mode and its step.

The W that can be served are those dividing M whose rank blocks are all nodes of the tree
(every power of two up to M when M is one); others are refused, naming those that work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from seeding import SeedPlan
from seeding.regions import reseed_sharded_stream
from training.parallel.batchnorm_replay import BatchNormReplay
from training.parallel.data_parallel import restore_own_rng
from training.parallel.exchange import Exchange, NoExchange, ReduceScatterExchange
from training.parallel.layout import StateLayout
from training.parallel.micro_batches import MicroBatchLayout, pin_threads
from training.parallel.optimizer_partition import OptimizerPartition
from training.parallel.protocol import Backward, Batch, StepParts, StepResult
from training.parallel.reduction_tree import tree_sum
from training.topology import Topology, all_gather_objects


class InvariantMode:
    """The mode as train.py chooses it (`parallel_mode`): the layout, and the seed of micro-batch
    j of step k (`SeedPlan.seed("microbatch", k, j)`)."""

    def __init__(self, layout: MicroBatchLayout, plan: SeedPlan, partition_optimizer: bool = False):
        self.layout = layout
        self.plan = plan
        self.micro_batch_seed: Callable[[int, int], int] = lambda step, micro_batch: plan.seed(
            "microbatch", step, micro_batch
        )
        self.partition_optimizer = partition_optimizer
        # The weights stay whole on every rank; a partitioned optimizer's run writes its
        # checkpoints per rank, as an FSDP2 run of the same config would.
        self.state_layout = StateLayout(per_rank_files=partition_optimizer)
        # Validation in fixed chunks of b, one per batch: the same samples per batch for any W.
        self.eval_chunk: int | None = layout.micro_batch

    def notes(self) -> list[str]:
        split = "; the optimizer state split over the ranks (parallel.shard, ZeRO stage 1)"
        return [self.layout.note() + (split if self.partition_optimizer else "")]

    def optimizer_partition(
        self, optimizer: torch.optim.Optimizer, topology: Topology
    ) -> OptimizerPartition | None:
        return OptimizerPartition(optimizer, topology) if self.partition_optimizer else None

    def describe(self) -> dict[str, Any] | None:
        return self.layout.describe()

    def fingerprint_world_size(self, world_size: int) -> int | str:
        return "any"  # the world size changes nothing that is computed

    def data_replicas(self, topology: Topology) -> tuple[int, int]:
        return topology.world_size, topology.rank

    def prepare(self, device: torch.device) -> None:
        pin_threads(device)

    def training_step(self, parts: StepParts) -> InvariantStep:
        return InvariantStep(self, parts)


class InvariantStep:
    """One optimizer step over the global batch, identical for every world size it serves."""

    def __init__(self, mode: InvariantMode, parts: StepParts) -> None:
        """`parts.precision` and `parts.accumulate_steps` are the mode's to refuse (no AMP) or
        fold into the micro-batches (a step is A global batches)."""
        model = parts.model
        self.model = model
        self.forward = parts.compiled(model, "the world-size-invariant step")
        self.objective = parts.objective
        self.layout = mode.layout
        self.micro_batch_seed = mode.micro_batch_seed
        self.topology = parts.topology
        self.groups = parameter_groups(model)
        self.batchnorm = BatchNormReplay(model)
        layout = mode.layout
        self.exchange: Exchange = (
            ReduceScatterExchange(layout.micro_batches, layout.world_size, layout.rank)
            if layout.world_size > 1
            else NoExchange()
        )

    def gradients(self, step: int, batches: list[Batch], backward: Backward) -> StepResult:
        """Leave the mean gradient of the step's global batches in every parameter's `.grad`.

        Each micro-batch runs its own backward (`backward` is not needed: the mode refuses AMP,
        so nothing is scaled)."""
        layout = self.layout
        summed: list[torch.Tensor] | None = None
        for index, (images, labels) in enumerate(batches):
            totals = self._global_batch_sums(step, index * layout.micro_batches, images, labels)
            summed = totals if summed is None else _add_each(summed, totals)
        assert summed is not None
        with torch.no_grad():
            means = [total / (layout.micro_batches * len(batches)) for total in summed]
            for group, mean in zip(self.groups, means, strict=True):
                offset = 0
                for parameter in group:
                    count = parameter.numel()
                    parameter.grad = mean[offset : offset + count].view_as(parameter).clone()
                    offset += count
            counted = sum(parameter.numel() for parameter in self.groups[0])
        return StepResult(
            means[0][counted], summed[0][counted + 1], layout.global_batch * len(batches)
        )

    def _global_batch_sums(
        self, step: int, first_slot: int, images: torch.Tensor, labels: torch.Tensor
    ) -> list[torch.Tensor]:
        """One global batch: its micro-batches' gradients (with the loss and the correct count
        after group 0's) summed over the tree, the same on every rank; BatchNorm's running
        statistics replayed in global order."""
        layout = self.layout
        b = layout.micro_batch
        lo, hi = layout.block
        if images.shape[0] != (hi - lo) * b:
            raise RuntimeError(
                f"world-size-invariant step: this rank got {images.shape[0]} samples, expected "
                f"{(hi - lo) * b} ({hi - lo} micro-batches of {b})"
            )
        self.batchnorm.begin_step()
        captured: list[torch.Tensor] = []

        def leaf(j: int) -> list[torch.Tensor]:
            local = slice((j - lo) * b, (j - lo + 1) * b)
            slot = first_slot + j
            seed = self.micro_batch_seed(step, slot)
            torch.manual_seed(seed)
            reseed_sharded_stream(seed)
            for group in self.groups:
                for parameter in group:
                    parameter.grad = None
            inputs, targets = self.objective.inputs(step, slot, images[local], labels[local])
            with torch.enable_grad():
                logits = self.forward(inputs)
                loss = self.objective.loss(logits, targets)
                loss.backward()
            captured.append(self.batchnorm.capture())
            with torch.no_grad():
                correct = self.objective.correct(logits, targets)
                counters = [loss.detach().reshape(1).float(), correct.reshape(1).float()]
                return [
                    torch.cat([*_flat_gradients(group), *(counters if index == 0 else [])])
                    for index, group in enumerate(self.groups)
                ]

        with torch.no_grad():
            mine = tree_sum(lo, hi, leaf, {}, add=_add_each)
            stats = torch.cat(captured) if captured else torch.zeros(0)
            totals, every_stats = self.exchange(mine, stats)
            per_micro = self.batchnorm.stats_size
            self.batchnorm.finish_step(
                [
                    every_stats[i * per_micro : (i + 1) * per_micro]
                    for i in range(layout.micro_batches)
                ]
            )
        return totals

    def epoch_sums(self, sums: torch.Tensor) -> list[float]:
        """Already the sums of the global batches, the same on every rank."""
        return sums.tolist()

    def evaluation_sums(self, per_batch: list[torch.Tensor]) -> list[float]:
        """Validation sums added over chunks in global order: the same for any world size.

        Batch i of rank r is chunk r + i * W (see the evaluation layout of the sampler)."""
        mine = torch.stack(per_batch).tolist() if per_batch else []
        world = self.topology.world_size
        chunks: dict[int, list[float]] = {}
        for rank, batches in enumerate(all_gather_objects(self.topology, mine)):
            for i, sums in enumerate(batches):
                chunks[rank + i * world] = sums
        totals = [0.0, 0.0, 0.0]
        for chunk in sorted(chunks):
            totals = [total + value for total, value in zip(totals, chunks[chunk], strict=True)]
        return totals

    def totals_to_continue(
        self, rank: int, saved_world_size: int, saved_replicas: int
    ) -> list[int]:
        """The running sums are the same on every rank, and no per-rank stream is drawn from
        while training: a checkpoint of another world size continues from rank 0's."""
        return [0]

    def restore_rng(self, states: list[Any], rank: int, step: int, saved_replicas: int) -> None:
        restore_own_rng(states, rank)


def parameter_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """The trained parameters by dtype, float32 first (it also carries the loss and the correct
    count), in model order within each: one vector per dtype travels between the ranks."""
    trained = [p for p in model.parameters() if p.requires_grad]
    dtypes = [torch.float32, *sorted({p.dtype for p in trained} - {torch.float32}, key=str)]
    return [[p for p in trained if p.dtype == dtype] for dtype in dtypes]


def _flat_gradients(group: list[nn.Parameter]) -> list[torch.Tensor]:
    return [
        torch.zeros_like(p).reshape(-1) if p.grad is None else p.grad.reshape(-1) for p in group
    ]


def _add_each(left: list[torch.Tensor], right: list[torch.Tensor]) -> list[torch.Tensor]:
    return [a + b for a, b in zip(left, right, strict=True)]
