"""Sharded data parallelism: FSDP2 (`fully_shard`) over the data-parallel ranks (`parallel.shard`).

Each rank holds 1/W of every parameter, of its gradient and of its optimizer state; a forward or
backward pass gathers a layer's whole weights for the time it runs, and the gradients are
reduce-scattered so that each rank receives the average of its own shard. Same batches, same seed
plan, same health watch and checkpoints as DDP (training/parallel/data_parallel.py): only where the weights live
changes, and the arithmetic of the gradient average.

Why the gradients are measured once at start-up: FSDP2 in torch 2.7.1 asks for the average with
`ReduceOp.AVG`, which gloo silently computes as a sum (pytorch issue 162338): on CPU every gradient
would come out W times too large and training would run at W times the learning rate without a
word. `gradient_scale()` trains one step of a one-parameter model whose true average gradient is 1
and reads what FSDP delivers; the step divides by that factor (1 where the backend is right, W on
gloo today, 1 again the day torch fixes it). A test compares the sharded run's gradients with
DDP's, so the defect cannot come back unseen.

Checkpoints hold whole tensors (gathered, as under tensor parallelism): a sharded run resumes bit
for bit on the same W, and its checkpoints load into a DDP run and back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from seeding import SeedPlan
from training.parallel.data_parallel import DataParallelMode, ReplicaTotals, weighted_batches
from training.parallel.layout import StateLayout
from training.parallel.protocol import Backward, Batch, StepParts, StepResult
from training.topology import Topology, local_tensor


class FullyShardedMode(DataParallelMode):
    """The `ParallelMode` (training/parallel/protocol.py) of FSDP2 over every rank: DDP's but for the
    step."""

    def __init__(self, topology: Topology, plan: SeedPlan) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        super().__init__(plan)
        self.state_layout = StateLayout(split_parameters=True, per_rank_files=True)

        self.mesh = init_device_mesh(
            topology.device.type, (topology.world_size,), mesh_dim_names=("dp",)
        )
        self.scale = gradient_scale(self.mesh, topology.device)

    def notes(self) -> list[str]:
        note = "sharded (FSDP2): parameters, gradients and optimizer state split over the ranks"
        if self.scale != 1.0:
            note += (
                f"; this backend's reduce-scatter returned {self.scale:g} x the average "
                "gradient (gloo's AVG is a sum), divided out"
            )
        return [note]

    def training_step(self, parts: StepParts) -> FullyShardedStep:  # type: ignore[override]
        return FullyShardedStep(self, parts)


def gradient_scale(mesh: Any, device: torch.device) -> float:
    """What FSDP2's gradient reduction returns on this backend for a true average of 1."""
    from torch.distributed.fsdp import fully_shard

    probe = nn.Linear(mesh.size(), 1, bias=False, device=device)
    with torch.no_grad():
        probe.weight.fill_(1.0)
    fully_shard(probe, mesh=mesh)
    probe(torch.ones(1, mesh.size(), device=device)).sum().backward()
    local = local_tensor(probe.weight.grad)  # type: ignore[arg-type]
    # Only the rank holding the one element has a value (the others hold empty shards).
    received = local.detach().reshape(-1)[:1].sum().reshape(1) if local.numel() else None
    received = received if received is not None else torch.zeros(1, device=device)
    dist.all_reduce(received, op=dist.ReduceOp.MAX)
    return float(received)


class FullyShardedStep(ReplicaTotals):
    def __init__(self, mode: FullyShardedMode, parts: StepParts) -> None:
        from torch.distributed.fsdp import fully_shard

        self.model = fully_shard(parts.model, mesh=mode.mesh)
        self.forward = parts.compiled(
            self.model, "FSDP2 (parallel.shard)"
        )  # fully_shard, then compile
        self.scale = mode.scale
        self.parts = parts
        self.topology = parts.topology

    def gradients(self, step: int, batches: list[Batch], backward: Backward) -> StepResult:
        """As DDP's step; the gradients are reduce-scattered after the last batch only, then
        the backend's factor (`gradient_scale`) is divided out."""

        @contextlib.contextmanager
        def reduces_after(micro: int, last: bool) -> Iterator[None]:
            self.model.set_requires_gradient_sync(last)  # type: ignore[operator]
            yield

        slot_of = self.parts.slot_of(self.topology.rank)
        result = weighted_batches(
            step, batches, backward, self.parts, self.forward, slot_of, reduces_after
        )
        if self.scale != 1.0:
            with torch.no_grad():
                for parameter in self.model.parameters():
                    if parameter.grad is not None:
                        local_tensor(parameter.grad).div_(self.scale)
        return result
