"""Tensor parallelism on a data-parallel x tensor-parallel mesh (`parallel.tensor`).

`torchrun --nproc_per_node=4 train.py --config configs/vit_tiny.yaml parallel.tensor=2` lays the
four ranks out as dp = 2 x tp = 2: global rank r is data-parallel replica r // tp and tensor-
parallel shard r % tp (the tp ranks of a group are neighbours, as on one node's GPUs). The model
declares how it is split (`tensor_parallel_plan()`, models/vit_tiny.py) and torch's
`parallelize_module` turns those layers into DTensor shards on the mesh's tp axis.

What each axis shares, and why (seeding/plan.py's table says it as data):
- the tp ranks of a group are one replica: the same batch (the data is split over dp only), the
  same host, loader and worker streams, the same replicated dropout; only the sharded dropout
  sites draw a mask per shard (seeding/regions.py);
- the dp replicas are ordinary data parallelism: other batches, other streams, and the gradients
  averaged over the dp axis after the step's last micro-batch, in one flat all-reduce per dtype
  (replicated parameters and each rank's local shards alike: every shard has one peer per
  replica).

Initial weights need no broadcast: every rank builds the whole model from the shared init stream
and `parallelize_module` keeps each rank's slice of it, so the shards gathered back are the tp = 1
model's weights bit for bit. Checkpoints hold whole (gathered) tensors: a run resumes on the same
mesh bit for bit, and on another tp degree it loads and continues, though not bit for bit (a
row-parallel layer's all-reduce adds its partial sums in another order; see `restore_rng`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from foundation.errors import UserError
from seeding import SeedPlan, enter_sharded_stream
from seeding.state import restore_rng_state
from training.parallel.config import check_layout, mesh_coordinates
from training.parallel.data_parallel import (
    DataParallelMode,
    batch_sums,
    sum_over_ranks,
    weighted_batches,
)
from training.parallel.layout import StateLayout
from training.parallel.protocol import Backward, Batch, StepParts, StepResult
from training.topology import Topology, local_tensor


class TensorParallelMode(DataParallelMode):
    """The `ParallelMode` (training/parallel/protocol.py) of a dp x tp mesh."""

    def __init__(self, degree: int, topology: Topology, plan: SeedPlan) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        super().__init__(plan)
        self.state_layout = StateLayout(split_parameters=True)
        self.degree = degree
        self.replicas = check_layout(degree, topology.world_size)
        self.dp_rank, self.tp_rank = mesh_coordinates(topology.rank, degree)
        self.mesh = init_device_mesh(
            topology.device.type, (self.replicas, degree), mesh_dim_names=("dp", "tp")
        )

    def notes(self) -> list[str]:
        return [
            f"tensor parallelism: dp = {self.replicas} x tp = {self.degree}; sharded dropout "
            "sites draw a mask per tp rank, replicated ones the group's shared mask"
        ]

    def fingerprint_world_size(self, world_size: int) -> int | str:
        """What is computed depends on the data-parallel degree; tp only reorders sums."""
        return self.replicas

    def data_replicas(self, topology: Topology) -> tuple[int, int]:
        return self.replicas, self.dp_rank

    def training_step(self, parts: StepParts) -> TensorParallelStep:  # type: ignore[override]
        return TensorParallelStep(self, parts)


def split_model(model: nn.Module, mode: TensorParallelMode) -> None:
    """The model's own plan applied on the mesh's tp axis (its layers become DTensor shards)."""
    from torch.distributed.tensor.parallel import parallelize_module

    plan = getattr(model, "tensor_parallel_plan", None)
    if plan is None:
        raise UserError(
            f"parallel.tensor={mode.degree}: {type(model).__name__} has no tensor_parallel_plan()"
        )
    parallelize_module(model, mode.mesh["tp"], plan())


class TensorParallelStep:
    def __init__(self, mode: TensorParallelMode, parts: StepParts) -> None:
        split_model(parts.model, mode)
        self.mode = mode
        self.model = parts.model
        self.forward = parts.compiled(parts.model, "tensor parallelism")  # split, then compile
        self.parts = parts
        self.topology = parts.topology
        self.dp_group = mode.mesh["dp"].get_group()

    def gradients(self, step: int, batches: list[Batch], backward: Backward) -> StepResult:
        """As DDP's step (the tp collectives run inside the passes), then the gradients
        averaged over the dp axis. The MixUp/CutMix slot is the replica's: every tp rank of it
        mixes alike."""
        slot_of = self.parts.slot_of(self.mode.dp_rank)
        result = weighted_batches(step, batches, backward, self.parts, self.forward, slot_of)
        self._average_over_replicas()
        return result

    def _average_over_replicas(self) -> None:
        if self.mode.replicas == 1:
            return
        gradients = [local_tensor(p.grad) for p in self.model.parameters() if p.grad is not None]
        for dtype in sorted({g.dtype for g in gradients}, key=str):
            group = [g for g in gradients if g.dtype == dtype]
            flat = torch.cat([g.reshape(-1) for g in group])
            dist.all_reduce(flat, group=self.dp_group)
            flat /= self.mode.replicas
            offset = 0
            for gradient in group:
                gradient.copy_(flat[offset : offset + gradient.numel()].view_as(gradient))
                offset += gradient.numel()

    # A tp group computed one replica's sums (the same on each of its ranks): summed over the
    # dp axis only.
    def epoch_sums(self, sums: torch.Tensor) -> list[float]:
        return sum_over_ranks(self.topology, sums, self.dp_group)

    def evaluation_sums(self, per_batch: list[torch.Tensor]) -> list[float]:
        sums = batch_sums(per_batch, self.topology.device)
        return sum_over_ranks(self.topology, sums, self.dp_group)

    def _saved_degree(self, saved_world_size: int) -> int:
        return max(1, saved_world_size // self.mode.replicas)

    def totals_to_continue(
        self, rank: int, saved_world_size: int, saved_replicas: int
    ) -> list[int]:
        """The saved rank of this replica's first shard (every shard of it held the same sums;
        the dp degree is the checkpoint's, the fingerprint checks it)."""
        return [self.mode.dp_rank * self._saved_degree(saved_world_size)]

    def restore_rng(self, states: list[Any], rank: int, step: int, saved_replicas: int) -> None:
        """On the same mesh, this rank's own states. On another tp degree, the states of this
        replica's first shard (the group's shared streams), and the sharded stream restarts per
        shard keyed by the step: a saved shard's stream copied to two new shards would repeat
        one mask on both."""
        saved = self._saved_degree(len(states))
        if saved == self.mode.degree:
            restore_rng_state(states[rank])
            return
        restore_rng_state(states[self.mode.dp_rank * saved])
        enter_sharded_stream(self.mode.plan, after_step=step)
