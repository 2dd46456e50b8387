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
from pydantic import Field
from torch import nn

from foundation.errors import UserError
from foundation.process import next_commands, process_launch
from foundation.section import RUNTIME, Section
from seeding import SeedPlan, enter_sharded_stream
from seeding.state import restore_rng_state
from training.determinism import Precision
from training.objective import Objective
from training.steps import (
    Backward,
    Batch,
    DataParallelMode,
    StepResult,
    batch_sums,
    sum_over_ranks,
    weighted_batches,
)
from training.topology import Topology, local_tensor


class ParallelConfig(Section):
    """The `parallel` section: how the model is split beyond data parallelism."""

    tensor: int = Field(
        1,
        ge=1,
        description="tensor-parallel degree: the ranks of a group split each layer of the model "
        "(docs/tensor-parallel.md); the world size must be a multiple; 1 = data parallelism only. "
        "A resume on another degree continues, not bit for bit",
        json_schema_extra=RUNTIME,
    )
    shard: bool = Field(
        False,
        description="FSDP2 over the data-parallel ranks: each rank holds 1/W of the parameters, "
        "gradients and optimizer state (training/sharding.py); one process trains unsharded. In "
        "the world-size-invariant mode: the optimizer state only, split over the ranks (ZeRO-1, "
        "training/optimizer_shards.py), bit for bit. A resume with the other value continues",
        json_schema_extra=RUNTIME,
    )


def mesh_coordinates(rank: int, degree: int) -> tuple[int, int]:
    """(dp, tp) of a global rank: the tp ranks of a group are neighbours."""
    return rank // degree, rank % degree


def check_layout(degree: int, world_size: int) -> int:
    """The data-parallel degree, or a one-line UserError for a world size tp cannot divide."""
    if world_size % degree:
        below = world_size // degree * degree
        counts = [count for count in (below, below + degree) if count > 0]
        launch = next_commands().process_counts(counts, process_launch().nodes)
        raise UserError(
            f"parallel.tensor={degree} does not divide the world size {world_size}: launch a "
            f"multiple of {degree} processes ({launch})"
        )
    return world_size // degree


class TensorParallelMode(DataParallelMode):
    """The `ParallelMode` (training/steps.py) of a dp x tp mesh."""

    def __init__(self, degree: int, topology: Topology, plan: SeedPlan) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        self.degree = degree
        self.replicas = check_layout(degree, topology.world_size)
        self.dp_rank, self.tp_rank = mesh_coordinates(topology.rank, degree)
        self.plan = plan
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

    def training_step(  # type: ignore[override]
        self,
        model: nn.Module,
        topology: Topology,
        precision: Precision,
        objective: Objective,
        accumulate_steps: int,
    ) -> TensorParallelStep:
        return TensorParallelStep(self, model, topology, precision, objective, accumulate_steps)


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
    def __init__(
        self,
        mode: TensorParallelMode,
        model: nn.Module,
        topology: Topology,
        precision: Precision,
        objective: Objective,
        accumulate_steps: int,
    ) -> None:
        split_model(model, mode)
        self.mode = mode
        self.model = model
        self.topology = topology
        self.precision = precision
        self.objective = objective
        self.accumulate_steps = accumulate_steps
        self.dp_group = mode.mesh["dp"].get_group()

    def gradients(self, step: int, batches: list[Batch], backward: Backward) -> StepResult:
        """As DDP's step (the tp collectives run inside the passes), then the gradients
        averaged over the dp axis. The MixUp/CutMix slot is the replica's: every tp rank of it
        mixes alike."""
        result = weighted_batches(
            step,
            batches,
            backward,
            forward=self.model,
            objective=self.objective,
            precision=self.precision,
            device_type=self.topology.device.type,
            slot_of=lambda micro: self.mode.dp_rank * self.accumulate_steps + micro,
        )
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


def gathered(state: Any) -> Any:
    """`state` with every DTensor replaced by its whole tensor (a collective over its mesh):
    checkpoints hold whole tensors whatever the tp degree."""
    if isinstance(state, dict):
        return {key: gathered(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(gathered(value) for value in state)
    full_tensor = getattr(state, "full_tensor", None)
    return full_tensor() if full_tensor is not None else state


def sharded_like(current: dict[str, Any], whole: dict[str, Any]) -> dict[str, Any]:
    """The whole tensors of a checkpoint's model state, each cut like this run's DTensor of the
    same name (every rank keeps its own slice; no communication)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    sharded = dict(whole)
    for name, mine in current.items():
        if isinstance(mine, DTensor) and name in whole:
            sharded[name] = distribute_tensor(
                whole[name].to(mine.device), mine.device_mesh, mine.placements, src_data_rank=None
            )
    return sharded


def optimizer_state_sharded_like(
    optimizer: torch.optim.Optimizer, whole: dict[str, Any]
) -> dict[str, Any]:
    """An optimizer state dict of whole tensors with each parameter's state (momentum, moments)
    cut like that parameter."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for index, values in whole["state"].items():
        parameter = parameters[int(index)]
        if isinstance(parameter, DTensor):
            values = {
                key: distribute_tensor(
                    value.to(parameter.device),
                    parameter.device_mesh,
                    parameter.placements,
                    src_data_rank=None,
                )
                if torch.is_tensor(value) and value.shape == parameter.shape
                else value
                for key, value in values.items()
            }
        state[index] = values
    return {**whole, "state": state}


def clip_grad_norm(parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_`, also for a model split by tensor parallelism.

    Why our own: torch 2.7.1's refuses a model whose gradients mix DTensors and plain tensors
    ("got mixed torch.Tensor and DTensor"), which is every tensor-parallel model (its norms and
    embeddings stay whole). The norm is the whole model's: a sharded gradient's squares are
    summed over its mesh, a replicated one counts once; every rank gets the same norm."""
    from torch.distributed.tensor import DTensor

    gradients = [p.grad for p in parameters if p.grad is not None]
    if not any(isinstance(g, DTensor) for g in gradients):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    whole = [local_tensor(g) for g in gradients if not _sharded(g)]
    shards = [g for g in gradients if _sharded(g)]
    squares = torch.zeros((), dtype=torch.float32, device=gradients[0].device)
    if whole:
        squares = squares + torch.stack(torch._foreach_norm(whole)).float().square().sum()
    for mesh in {shard.device_mesh for shard in shards}:
        local = [s.to_local() for s in shards if s.device_mesh == mesh]
        summed = torch.stack(torch._foreach_norm(local)).float().square().sum()
        dist.all_reduce(summed, group=mesh.get_group())
        squares = squares + summed
    total = squares.sqrt()
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_([local_tensor(g) for g in gradients], coefficient)
    return total


def _sharded(gradient: torch.Tensor) -> bool:
    placements = getattr(gradient, "placements", ())
    return any(placement.is_shard() for placement in placements)
