"""Joining and leaving the process group, and naming the rank that stopped answering.

Why every collective can time out, and what happens then: a rank that stops answering (stopped,
swapping, a dead node) would leave the others waiting forever. The process group is created with
`distributed.collective_timeout_s`; when a collective fails, `ProcessGroup.guard` asks the store
which ranks are still there (a roll call) and which posted a fault of their own, and raises one
line that names the operation and the rank that did not arrive.
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
from pydantic import Field

from foundation.errors import UserError, first_line
from foundation.faults import PeerFailed, PeerUnresponsive
from foundation.process import process_launch
from foundation.section import RUNTIME, Section
from runtime.launcher_watch import bounded
from training.topology import Topology

ROLL_CALL_GRACE_S = 5.0  # how long survivors wait for each other before naming the missing
DEFAULT_COLLECTIVE_TIMEOUT_S = 600.0


class DistributedConfig(Section):
    """The `distributed` section: how long a rank waits for the others."""

    collective_timeout_s: float = Field(
        DEFAULT_COLLECTIVE_TIMEOUT_S,
        gt=0,
        description="how long a collective (or joining the group) waits for a rank before the "
        "run stops naming it",
        json_schema_extra=RUNTIME,
    )


@dataclass(frozen=True)
class ProcessGroup:
    """This process's topology plus what the runtime needs around collectives: the store every
    rank shares (roll calls, posted faults) and a gloo group for host-side votes (on NCCL a CPU
    tensor cannot travel on the default group). In one process both are None."""

    topology: Topology
    timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S
    store: Any = field(default=None, repr=False, compare=False)
    control_group: Any = field(default=None, repr=False, compare=False)

    @property
    def rank(self) -> int:
        return self.topology.rank

    @property
    def world_size(self) -> int:
        return self.topology.world_size

    @property
    def device(self) -> torch.device:
        return self.topology.device

    @property
    def is_main(self) -> bool:
        return self.topology.is_main

    @property
    def distributed(self) -> bool:
        return self.topology.distributed

    @contextlib.contextmanager
    def guard(self, operation: str, step: int | None = None) -> Iterator[None]:
        """Run collectives; if one fails, raise one line naming `operation` and the missing rank.

        `operation` may hold `{step}`: it is formatted only on failure, since the trainer enters
        this context every step. If another rank posted a fault of its own before leaving
        (`post_fault`), that rank reports it and this one stops quietly with `PeerFailed`;
        otherwise a roll call through the store names the ranks that did not answer."""
        try:
            yield
        except RuntimeError as error:
            if not self.distributed or self.store is None or not is_communication_failure(error):
                raise
            raise self._peer_fault(operation.format(step=step), error) from None

    def _peer_fault(self, operation: str, error: BaseException) -> Exception:
        timed_out = "timed out" in str(error).lower()
        try:
            self.raise_if_a_peer_failed()
            # Survivors of a timeout reach the roll call up to a step apart; a lost connection
            # is seen at once by every rank that was talking to the lost one.
            grace = min(self.timeout_s, ROLL_CALL_GRACE_S if timed_out else 1.0)
            missing = roll_call(self.store, "alive", self.rank, self.world_size, grace)
        except PeerFailed as failure:
            return failure
        except (RuntimeError, OSError):  # the store itself is gone (it lived on a lost rank)
            missing = []
        present = sorted(set(range(self.world_size)) - set(missing))
        reporter = present[0] if present else self.rank
        if timed_out:
            cause = f"did not arrive within {self.timeout_s:g} s (distributed.collective_timeout_s)"
        else:
            cause = f"went away ({_first_line(error)})"
        who = _ranks(missing) if missing else "a peer (the store could not say which)"
        return PeerUnresponsive(f"{operation}: {who} {cause}", reporting_rank=reporter)

    def post_fault(self, message: str) -> None:
        """Tell the other ranks why this one is leaving, so that they do not blame a hang."""
        if self.distributed and self.store is not None:
            with contextlib.suppress(RuntimeError, OSError):
                self.store.set(f"fault/{self.rank}", message)

    def raise_if_a_peer_failed(self) -> None:
        """After any error of this rank: if another rank posted a fault first, that is the cause
        (e.g. torchrun stopping this rank because the other one failed); stop quietly."""
        if self.distributed and self.store is not None:
            with contextlib.suppress(RuntimeError, OSError):
                posted = self._posted_faults()
                if posted:
                    rank, message = min(posted.items())
                    raise PeerFailed(f"rank {rank} failed: {message}", reporting_rank=rank)

    def _posted_faults(self) -> dict[int, str]:
        found = {}
        for rank in range(self.world_size):
            key = f"fault/{rank}"
            if rank != self.rank and self.store.check([key]):
                found[rank] = self.store.get(key).decode()
        return found

    def all_gather_ints(self, values: list[int]) -> list[list[int]]:
        """Every rank's `values` (same length everywhere), on the host: a vote that never waits
        for the GPU (on NCCL it travels on the gloo control group)."""
        if not self.distributed:
            return [list(values)]
        mine = torch.tensor(values, dtype=torch.int64)
        gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine, group=self.control_group)
        return [tensor.tolist() for tensor in gathered]

    def leave(self) -> None:
        """Leave the process group together, if this run joined one (see
        `leave_process_group`). Call it after the last object holding the group is gone."""
        with self.guard("leaving the process group"):
            if self.distributed and dist.is_initialized():
                leave_process_group(self.device)


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


def join_process_group(
    requested_device: str, timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S
) -> ProcessGroup:
    """Join the process group (gloo on CPU, NCCL on CUDA) when launched by torchrun; a single
    process without it."""
    launch = process_launch()
    device = choose_device(requested_device, launch.local_rank)
    rank, world_size = launch.rank, launch.world_size
    if world_size == 1:
        topology = Topology(rank, world_size, launch.local_rank, launch.nodes, device, None)
        return ProcessGroup(topology, timeout_s)
    backend = "nccl" if device.type == "cuda" else "gloo"
    topology = Topology(rank, world_size, launch.local_rank, launch.nodes, device, backend)
    timeout = timedelta(seconds=timeout_s)
    waiting = (
        f"joining the process group: the store did not answer within {timeout_s:g} s "
        "(distributed.collective_timeout_s)"
    )
    with bounded(timeout_s, waiting):  # torch's own connect can wait far longer
        store = _store_for_this_attempt(rank, world_size, timeout)
    joining = ProcessGroup(topology, timeout_s, store)
    with joining.guard("joining the process group"):
        missing = roll_call(store, "joined", rank, world_size, grace_s=timeout_s)
        if missing:
            raise PeerUnresponsive(
                f"joining the process group: {_ranks(missing)} did not arrive within "
                f"{timeout_s:g} s (distributed.collective_timeout_s)",
                reporting_rank=min(set(range(world_size)) - set(missing)),
            )
        dist.init_process_group(
            backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout
        )
        control = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
    return ProcessGroup(topology, timeout_s, store, control)


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
        address, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT", "")
        if not address or not port.isdigit() or not int(port):
            raise UserError(
                f"WORLD_SIZE={world_size} without torchrun needs MASTER_ADDR and MASTER_PORT"
            )
        try:
            store = dist.TCPStore(
                address, int(port), world_size, rank == 0, timeout, wait_for_workers=False
            )
        except (RuntimeError, OSError) as error:
            raise PeerUnresponsive(
                f"joining the process group: rank {rank} could not reach rank 0's store at "
                f"{address}:{port} within {timeout.total_seconds():g} s ({_first_line(error)})",
                reporting_rank=rank,
            ) from None
    return dist.PrefixStore(f"attempt-{process_launch().restart_attempt}", store)


# ------------------------------------------------------------------ when a collective fails
_COMMUNICATION_FAILURE = re.compile(
    r"gloo|nccl|timed out|connection (reset|closed|refused)|broken pipe", re.I
)


def is_communication_failure(error: BaseException) -> bool:
    """gloo and NCCL raise RuntimeError (DistBackendError in newer paths) naming themselves."""
    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and bool(_COMMUNICATION_FAILURE.search(str(error)))


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


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def _first_line(error: BaseException) -> str:
    """gloo's messages start with the C++ source location: drop it."""
    return re.sub(r"^\[[^\]]*\]\s*", "", first_line(error))[:200]


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
