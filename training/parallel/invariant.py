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

The W that can be served are those dividing M whose rank blocks are all nodes of the tree
(every power of two up to M when M is one); others are refused, naming those that work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from foundation.errors import UserError
from seeding import SeedPlan
from seeding.regions import reseed_sharded_stream
from training.determinism import Precision
from training.objective import Objective
from training.parallel.data_parallel import restore_own_rng
from training.parallel.exchange import Exchange, NoExchange, ReduceScatterExchange
from training.parallel.layout import StateLayout
from training.parallel.optimizer_partition import OptimizerPartition
from training.parallel.protocol import Backward, Batch, StepResult
from training.parallel.reduction_tree import Node, rank_block, serving_world_sizes, tree_sum
from training.topology import Topology, all_gather_objects

INTRA_OP_THREADS = 1  # what torchrun gives every worker; the same for a single process here


@dataclass(frozen=True)
class MicroBatchLayout:
    """Where this rank's micro-batches sit in the global batch."""

    global_batch: int  # B
    micro_batch: int  # b
    world_size: int
    rank: int

    @property
    def micro_batches(self) -> int:  # M
        return self.global_batch // self.micro_batch

    @property
    def block(self) -> Node:
        return rank_block(self.micro_batches, self.world_size, self.rank)

    @classmethod
    def checked(
        cls, global_batch: int, micro_batch: int, world_size: int, rank: int
    ) -> MicroBatchLayout:
        """The layout, or a one-line UserError naming the world sizes that work for B and b."""
        micro_batches = global_batch // micro_batch
        serving = serving_world_sizes(micro_batches)
        if world_size not in serving:
            raise UserError(
                f"trainer.world_size_invariant: {world_size} processes cannot share "
                f"data.global_batch_size={global_batch} in micro-batches of "
                f"trainer.micro_batch_size={micro_batch} ({micro_batches} micro-batches, each "
                f"rank a subtree of one summation tree); world sizes that work: "
                f"{', '.join(map(str, serving))}"
            )
        return cls(global_batch, micro_batch, world_size, rank)

    def note(self) -> str:
        """For the determinism report."""
        serving = ", ".join(map(str, serving_world_sizes(self.micro_batches)))
        return (
            f"world-size invariant: {self.micro_batches} micro-batches of {self.micro_batch}; "
            f"the same weights and metrics for world sizes {serving} on the same hardware type "
            f"and library versions; intra-op threads pinned to {INTRA_OP_THREADS} on CPU; on GPU "
            "the debug/eval determinism flags apply (no cudnn.benchmark, TF32 or AMP)"
        )

    def describe(self) -> dict[str, int | list[int]]:
        return {
            "global_batch_size": self.global_batch,
            "micro_batch_size": self.micro_batch,
            "micro_batches": self.micro_batches,
            "serving_world_sizes": serving_world_sizes(self.micro_batches),
            "intra_op_threads": INTRA_OP_THREADS,
        }


def pin_threads(device: torch.device) -> None:
    """On CPU the intra-op thread count changes results; on GPU it does not matter."""
    if device.type == "cpu":
        torch.set_num_threads(INTRA_OP_THREADS)


class BatchNormReplay:
    """Running statistics as if one process had seen the micro-batches in global order."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [
            module
            for module in model.modules()
            if isinstance(module, _BatchNorm) and module.track_running_stats
        ]
        self._device = next(model.parameters()).device
        self._snapshot: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._momentum: list[float | None] = []

    @property
    def stats_size(self) -> int:
        """Values captured per micro-batch: mean and variance of every layer."""
        return sum(2 * layer.num_features for layer in self.layers)

    def begin_step(self) -> None:
        self._snapshot = [
            (
                layer.running_mean.clone(),
                layer.running_var.clone(),
                layer.num_batches_tracked.clone(),
            )  # type: ignore[union-attr]
            for layer in self.layers
        ]
        self._momentum = [layer.momentum for layer in self.layers]
        for layer in self.layers:
            layer.momentum = 1.0  # the buffers become exactly this micro-batch's statistics

    def capture(self) -> torch.Tensor:
        """After a micro-batch's forward: its mean and (unbiased) variance of every layer."""
        parts = [
            torch.cat([layer.running_mean, layer.running_var])  # type: ignore[list-item]
            for layer in self.layers
        ]
        if not parts:  # a model without BatchNorm: nothing to capture, on the model's device
            return torch.zeros(0, device=self._device)
        return torch.cat(parts).float()

    def finish_step(self, stats: list[torch.Tensor]) -> None:
        """Restore the snapshot, then apply each micro-batch's update in global order."""
        for layer, (mean, var, tracked), momentum in zip(
            self.layers, self._snapshot, self._momentum, strict=True
        ):
            layer.momentum = momentum
            layer.running_mean.copy_(mean)  # type: ignore[union-attr]
            layer.running_var.copy_(var)  # type: ignore[union-attr]
            layer.num_batches_tracked.copy_(tracked)  # type: ignore[union-attr]
        for captured in stats:
            offset = 0
            for layer in self.layers:
                width = layer.num_features
                batch_mean = captured[offset : offset + width]
                batch_var = captured[offset + width : offset + 2 * width]
                offset += 2 * width
                layer.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                factor = (
                    layer.momentum
                    if layer.momentum is not None
                    else 1.0 / float(layer.num_batches_tracked)  # type: ignore[arg-type]
                )
                running_mean, running_var = layer.running_mean, layer.running_var
                running_mean.mul_(1 - factor).add_(batch_mean.to(running_mean), alpha=factor)  # type: ignore[union-attr]
                running_var.mul_(1 - factor).add_(batch_var.to(running_var), alpha=factor)  # type: ignore[union-attr]


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

    def training_step(
        self,
        model: nn.Module,
        topology: Topology,
        precision: Precision,
        objective: Objective,
        accumulate_steps: int,
    ) -> InvariantStep:
        return InvariantStep(model, self, topology, objective)


class InvariantStep:
    """One optimizer step over the global batch, identical for every world size it serves."""

    def __init__(
        self, model: nn.Module, mode: InvariantMode, topology: Topology, objective: Objective
    ) -> None:
        self.model = model
        self.objective = objective
        self.layout = mode.layout
        self.micro_batch_seed = mode.micro_batch_seed
        self.topology = topology
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
                logits = self.model(inputs)
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
