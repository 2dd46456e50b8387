"""Where this process computes: its rank among how many, on which device, over which backend;
and the few collectives that are part of what a run computes.

Why apart from the process group's set-up (runtime/process_group.py): joining, the store, the
roll call that names a silent rank and leaving without gloo's exit hang are plumbing around a
run. Summing metrics over ranks or gathering every rank's RNG state are part of the computation
itself, and the trainer needs only these plain values and functions for them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Topology:
    rank: int
    world_size: int
    local_rank: int
    nodes: int
    device: torch.device
    backend: str | None  # None: one process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def single(cls, device: torch.device | str = "cpu") -> Topology:
        """One process, no process group (tests, benchmarks)."""
        return cls(0, 1, 0, 1, torch.device(device), None)


class CollectiveGuard(Protocol):
    """`with guard("the evaluation at step {step}", step):` around collectives: the runtime
    turns a collective that fails because a peer went away into one line naming the operation
    and the peer. `operation` is formatted only on failure (the trainer enters this per step)."""

    def __call__(
        self, operation: str, step: int | None = None
    ) -> contextlib.AbstractContextManager[None]: ...


def unguarded(operation: str, step: int | None = None) -> contextlib.AbstractContextManager[None]:
    """No naming of failed collectives: one process, or a test."""
    return contextlib.nullcontext()


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (tensor parallelism); a plain tensor is its own."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor


def all_gather_objects(topology: Topology, value: Any) -> list[Any]:
    if not topology.distributed:
        return [value]
    gathered: list[Any] = [None] * topology.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce_sum(topology: Topology, tensor: torch.Tensor) -> torch.Tensor:
    """Summed over ranks in place (on NCCL the tensor must be on the GPU, on gloo on the CPU)."""
    if topology.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_rank_0(topology: Topology, tensors: Iterator[torch.Tensor]) -> None:
    if topology.distributed:
        for tensor in tensors:
            dist.broadcast(tensor, src=0)
