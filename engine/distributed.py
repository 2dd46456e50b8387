"""Process topology from torchrun's environment, and the few collectives the trainer needs.

Why the global rank everywhere: RANK is unique across nodes; LOCAL_RANK repeats on every node
(seeding from it makes GPU 0 of each node draw the same streams). LOCAL_RANK only picks the GPU.

Why every collective can time out, and what happens then: a rank that stops answering (stopped,
swapping, a dead node) would leave the others waiting forever. The process group is created with
`trainer.collective_timeout_s`; when a collective fails, `collective()` asks the store which
ranks are still there (a roll call) and which posted a fault of their own, and raises one line
that names the operation and the rank that did not arrive.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from engine.errors import UserError, first_line
from engine.faults import PeerFailed, PeerUnresponsive

DEFAULT_COLLECTIVE_TIMEOUT_S = 600.0
ROLL_CALL_GRACE_S = 5.0  # how long survivors wait for each other before naming the missing


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    nodes: int
    device: torch.device
    backend: str | None
    timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S
    # The store every rank shares (roll calls, posted faults) and a gloo group for host-side
    # votes (on NCCL, a CPU tensor cannot travel on the default group); None in one process.
    store: Any = field(default=None, repr=False, compare=False)
    control_group: Any = field(default=None, repr=False, compare=False)

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


def init_distributed(
    requested_device: str, timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S
) -> DistContext:
    """Join the process group (gloo on CPU, NCCL on CUDA) when launched by torchrun."""
    rank, world_size, local_rank, nodes = topology_from_env()
    device = choose_device(requested_device, local_rank)
    if world_size == 1:
        return DistContext(rank, world_size, local_rank, nodes, device, None, timeout_s)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(seconds=timeout_s)
    store = _store_for_this_attempt(rank, world_size, timeout)
    joining = DistContext(rank, world_size, local_rank, nodes, device, backend, timeout_s, store)
    with collective(joining, "joining the process group"):
        missing = roll_call(store, "joined", rank, world_size, grace_s=timeout_s)
        if missing:
            raise PeerUnresponsive(
                f"joining the process group: {_ranks(missing)} did not arrive within "
                f"{timeout_s:g} s (trainer.collective_timeout_s)",
                reporting_rank=min(set(range(world_size)) - set(missing)),
            )
        dist.init_process_group(
            backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout
        )
        control = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
    return DistContext(
        rank, world_size, local_rank, nodes, device, backend, timeout_s, store, control
    )


def _store_for_this_attempt(rank: int, world_size: int, timeout: timedelta) -> dist.Store:
    """torchrun's store, with keys namespaced by the restart attempt.

    Why: after a worker dies, `torchrun --max-restarts` starts the group again against the *same*
    TCPStore (measured with torch 2.7.1 and --standalone), so the previous attempt's keys, among
    them the dead ranks' gloo addresses, are still there; a new rank can read a stale address and
    connect to nothing (seen: "Gloo connectFullMesh failed", or a hang). A prefix per attempt gives
    each attempt a clean namespace.

    Without torchrun (MASTER_ADDR and MASTER_PORT set by hand or by srun), rank 0 hosts the
    store and does not wait there for the others: the roll call after it names who is missing.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        store, _, _ = next(
            dist.rendezvous("env://", rank=rank, world_size=world_size, timeout=timeout)
        )
    else:
        address, port = os.environ.get("MASTER_ADDR"), _env_int("MASTER_PORT", 0)
        if not address or not port:
            raise UserError(
                f"WORLD_SIZE={world_size} without torchrun needs MASTER_ADDR and MASTER_PORT"
            )
        try:
            store = dist.TCPStore(
                address, port, world_size, rank == 0, timeout, wait_for_workers=False
            )
        except (RuntimeError, OSError) as error:
            raise PeerUnresponsive(
                f"joining the process group: rank {rank} could not reach rank 0's store at "
                f"{address}:{port} within {timeout.total_seconds():g} s ({_first_line(error)})",
                reporting_rank=rank,
            ) from None
    return dist.PrefixStore(f"attempt-{restart_attempt()}", store)


# ------------------------------------------------------------------ when a collective fails
_COMMUNICATION_FAILURE = re.compile(
    r"gloo|nccl|timed out|connection (reset|closed|refused)|broken pipe", re.I
)


def is_communication_failure(error: BaseException) -> bool:
    """gloo and NCCL raise RuntimeError (DistBackendError in newer paths) naming themselves."""
    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and bool(_COMMUNICATION_FAILURE.search(str(error)))


@contextlib.contextmanager
def collective(context: DistContext, operation: str, step: int | None = None) -> Iterator[None]:
    """Run collectives; if one fails, raise one line naming `operation` and the missing rank.

    `operation` may hold `{step}`: it is formatted only on failure, since the trainer enters
    this context every step.

    If another rank posted a fault of its own before leaving (`post_fault`), that rank reports
    it and this one stops quietly with `PeerFailed`; otherwise a roll call through the store
    names the ranks that did not answer (`PeerUnresponsive`)."""
    try:
        yield
    except RuntimeError as error:
        if not context.distributed or context.store is None or not is_communication_failure(error):
            raise
        raise _peer_fault(context, operation.format(step=step), error) from None


def _peer_fault(context: DistContext, operation: str, error: BaseException) -> Exception:
    timed_out = "timed out" in str(error).lower()
    try:
        raise_if_a_peer_failed(context)
        # Survivors of a timeout reach the roll call up to a step apart; a lost connection is
        # seen at once by every rank that was talking to the lost one.
        grace = min(context.timeout_s, ROLL_CALL_GRACE_S if timed_out else 1.0)
        missing = roll_call(context.store, "alive", context.rank, context.world_size, grace)
    except PeerFailed as failure:
        return failure
    except (RuntimeError, OSError):  # the store itself is gone (it lived on a lost rank)
        missing = []
    present = sorted(set(range(context.world_size)) - set(missing))
    reporter = present[0] if present else context.rank
    if timed_out:
        cause = f"did not arrive within {context.timeout_s:g} s (trainer.collective_timeout_s)"
    else:
        cause = f"went away ({_first_line(error)})"
    who = _ranks(missing) if missing else "a peer (the store could not say which)"
    return PeerUnresponsive(f"{operation}: {who} {cause}", reporting_rank=reporter)


def raise_if_a_peer_failed(context: DistContext) -> None:
    """After any error of this rank: if another rank posted a fault first, that is the cause
    (e.g. torchrun stopping this rank because the other one failed); stop quietly."""
    if context.distributed and context.store is not None:
        with contextlib.suppress(RuntimeError, OSError):
            posted = posted_faults(context)
            if posted:
                rank, message = min(posted.items())
                raise PeerFailed(f"rank {rank} failed: {message}", reporting_rank=rank)


def roll_call(store: Any, topic: str, rank: int, world_size: int, grace_s: float) -> list[int]:
    """Say "here" under `topic` and wait up to `grace_s` for every rank; the ranks that stay
    silent, in order. Each topic is used once per attempt (a process stops after a fault)."""
    store.set(f"{topic}/{rank}", "here")
    deadline = time.monotonic() + grace_s
    while True:
        missing = [r for r in range(world_size) if not store.check([f"{topic}/{r}"])]
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(0.05)


def post_fault(context: DistContext, message: str) -> None:
    """Tell the other ranks why this one is leaving, so that they do not blame it on a hang."""
    if context.distributed and context.store is not None:
        with contextlib.suppress(RuntimeError, OSError):
            context.store.set(f"fault/{context.rank}", message)


def posted_faults(context: DistContext) -> dict[int, str]:
    found = {}
    for rank in range(context.world_size):
        key = f"fault/{rank}"
        if rank != context.rank and context.store.check([key]):
            found[rank] = context.store.get(key).decode()
    return found


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def _first_line(error: BaseException) -> str:
    """gloo's messages start with the C++ source location: drop it."""
    return re.sub(r"^\[[^\]]*\]\s*", "", first_line(error))[:200]


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


def all_gather_ints(context: DistContext, values: list[int]) -> list[list[int]]:
    """Every rank's `values` (same length everywhere), on the host: a vote that never waits for
    the GPU (on NCCL it travels on the gloo control group)."""
    if not context.distributed:
        return [list(values)]
    mine = torch.tensor(values, dtype=torch.int64)
    gathered = [torch.empty_like(mine) for _ in range(context.world_size)]
    dist.all_gather(gathered, mine, group=context.control_group)
    return [tensor.tolist() for tensor in gathered]


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
