"""Process topology from torchrun's environment, and the few collectives the trainer needs.

Why the global rank everywhere: RANK is unique across nodes; LOCAL_RANK repeats on every node
(seeding from it makes GPU 0 of each node draw the same streams). LOCAL_RANK only picks the GPU.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from engine.errors import UserError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    nodes: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def restart_attempt() -> int:
    """How many times torchrun has restarted this worker group (0 on the first attempt).

    The one place TORCHELASTIC_RESTART_COUNT is read: the store namespace and `--resume auto`
    on a restart both follow it.
    """
    return _env_int("TORCHELASTIC_RESTART_COUNT", 0)


def topology_from_env() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, nodes) as torchrun sets them; a single process without it."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world_size = _env_int("LOCAL_WORLD_SIZE", world_size)
    nodes = max(1, world_size // max(1, local_world_size))
    return rank, world_size, local_rank, nodes


def choose_device(requested: str, local_rank: int) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device=cuda but CUDA is not available on this machine")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise UserError(
            f"LOCAL_RANK {local_rank} has no GPU: only {torch.cuda.device_count()} visible"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(requested_device: str) -> DistContext:
    """Join the process group (gloo on CPU, NCCL on CUDA) when launched by torchrun."""
    rank, world_size, local_rank, nodes = topology_from_env()
    device = choose_device(requested_device, local_rank)
    backend = None
    if world_size > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            store=_store_for_this_attempt(rank, world_size),
            rank=rank,
            world_size=world_size,
            timeout=_TIMEOUT,
        )
    return DistContext(rank, world_size, local_rank, nodes, device, backend)


_TIMEOUT = timedelta(minutes=10)


def _store_for_this_attempt(rank: int, world_size: int) -> dist.Store:
    """torchrun's store, with keys namespaced by the restart attempt.

    Why: after a worker dies, `torchrun --max-restarts` starts the group again against the *same*
    TCPStore (measured with torch 2.7.1 and --standalone), so the previous attempt's keys, among
    them the dead ranks' gloo addresses, are still there; a new rank can read a stale address and
    connect to nothing (seen: "Gloo connectFullMesh failed", or a hang). A prefix per attempt gives
    each attempt a clean namespace.
    """
    store, _, _ = next(
        dist.rendezvous("env://", rank=rank, world_size=world_size, timeout=_TIMEOUT)
    )
    return dist.PrefixStore(f"attempt-{restart_attempt()}", store)


def shutdown(context: DistContext) -> None:
    """Leave the process group, if this run joined one (see `leave_process_group`)."""
    if context.distributed and dist.is_initialized():
        leave_process_group(context.device)


def leave_process_group(device: torch.device) -> None:
    """Leave the default process group together, without gloo's exit deadlock.

    Call it after the last object holding the group is gone (a DDP model: its reducer holds it).

    Why not just `barrier(); destroy_process_group()`: with torch 2.7.1 that hung about one 2-rank
    CPU run in fifty at exit (seen in CI; stacks read with py-spy). Gloo's worker threads free
    finished collectives after waking the caller; a collective whose tensors came from Python
    (all_gather_object, our metric all-reduce) needs the GIL to free them. The last reference to
    the group, dropped in Python, runs `~ProcessGroupGloo` with the GIL held, which joins those
    threads: one waits for the GIL, the other for the thread. A second barrier does not help
    (it keeps the first one, and so the gathered tensors, alive). torch drops its own reference
    to the gloo backend object with the GIL released, so this holds that reference, lets the
    group go first, then drops the backend last.
    """
    dist.barrier()
    backend = dist.group.WORLD._get_backend(device)  # type: ignore[union-attr]
    dist.destroy_process_group()
    gc.collect()  # a reducer caught in a reference cycle would otherwise outlive `backend`
    del backend  # the last reference: gloo's threads are joined with the GIL released


def all_gather_objects(context: DistContext, value: Any) -> list[Any]:
    if not context.distributed:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(context: DistContext, value: Any) -> Any:
    if not context.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_reduce_sum(context: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    if context.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(context: DistContext) -> None:
    if context.distributed:
        dist.barrier()
