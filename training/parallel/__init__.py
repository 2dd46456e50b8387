"""Each parallel layout is one strategy that owns its state: its step, its seed plan, where its
state lives (`StateLayout`) and so which checkpoint it writes. Chosen once, here, from the
config; nothing outside this package branches on which one runs.

    data_parallel   DDP (and one process): `DataParallelMode`, the step every layout builds on
    fully_sharded   FSDP2 over the ranks (`parallel.shard`)
    tensor          a dp x tp mesh (`parallel.tensor`); config: the `parallel` section, the mesh
    invariant       the world-size-invariant step, with exchange (how its partial sums travel),
                    reduction_tree (their one summation order) and optimizer_partition (ZeRO-1)
    layout, dtensor where the state lives; the DTensor helpers of the layouts that split weights
    protocol        what the trainer and the runtime know of a layout
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import seeding
from training.parallel.config import ParallelConfig, check_layout, mesh_coordinates
from training.parallel.data_parallel import DataParallelMode
from training.parallel.fully_sharded import FullyShardedMode
from training.parallel.invariant import InvariantMode
from training.parallel.layout import StateLayout
from training.parallel.micro_batches import MicroBatchLayout
from training.parallel.protocol import ParallelMode
from training.parallel.tensor import TensorParallelMode
from training.topology import Topology


class InvarianceKeys(Protocol):
    """The `trainer` section's keys of the invariant mode (training/trainer.py's TrainerConfig,
    which imports this package)."""

    world_size_invariant: bool
    micro_batch_size: int | None


__all__ = ["ParallelConfig", "ParallelMode", "StateLayout", "parallel_mode"]


def parallel_mode(
    parallel: ParallelConfig,
    trainer: InvarianceKeys,
    global_batch_size: int | None,
    topology: Topology,
    seed: int,
    bases: Mapping[str, int] | None = None,
) -> ParallelMode:
    """FSDP2 over the ranks (`parallel.shard`; in the invariant mode, its optimizer state split
    over the ranks instead), tensor parallelism on a dp x tp mesh (`parallel.tensor` > 1), the
    world-size-invariant mode if asked for, else ordinary data parallelism; each with the seed
    plan of its ranks (the tp ranks of a group are one replica). A world size the layout cannot
    serve is refused here, before anything is written."""
    degree, shard = parallel.tensor, parallel.shard
    if degree > 1:
        check_layout(degree, topology.world_size)
        plan = seeding.tensor_parallel(seed, *mesh_coordinates(topology.rank, degree), bases)
    else:
        plan = seeding.data_parallel(seed, topology.rank, bases)
    if shard and topology.distributed and not trainer.world_size_invariant:
        return FullyShardedMode(topology, plan)
    if degree > 1:
        return TensorParallelMode(degree, topology, plan)
    if not trainer.world_size_invariant:
        return DataParallelMode(plan, per_rank_files=shard)  # one process: nothing to shard
    assert global_batch_size and trainer.micro_batch_size  # the config schema checks both
    layout = MicroBatchLayout.checked(
        global_batch_size, trainer.micro_batch_size, topology.world_size, topology.rank
    )
    return InvariantMode(layout, plan, partition_optimizer=shard)
