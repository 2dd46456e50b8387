"""Which parallel mode a run uses, chosen once from its config (see training/steps.py)."""

from __future__ import annotations

from collections.abc import Callable

from seeding import SeedPlan
from training.invariance import InvariantMode, MicroBatchLayout
from training.sharding import ShardedMode
from training.steps import DataParallelMode, ParallelMode
from training.tensor_parallel import TensorParallelMode
from training.topology import Topology
from training.trainer import TrainerConfig


def parallel_mode(
    trainer: TrainerConfig,
    global_batch_size: int | None,
    topology: Topology,
    micro_batch_seed: Callable[[int, int], int],
    tensor_degree: int = 1,
    plan: SeedPlan | None = None,
    shard: bool = False,
) -> ParallelMode:
    """FSDP2 over the ranks (`shard`; in the invariant mode, its optimizer state split over the
    ranks instead), tensor parallelism on a dp x tp mesh (`tensor_degree` > 1, with the run's `plan`), the
    world-size-invariant mode if asked for, else ordinary data parallelism. A world size the
    mode cannot serve is refused here, before anything is written."""
    if shard and topology.distributed and not trainer.world_size_invariant:
        return ShardedMode(topology)  # (one process has nothing to shard)
    if tensor_degree > 1:
        assert plan is not None
        return TensorParallelMode(tensor_degree, topology, plan)
    if not trainer.world_size_invariant:
        return DataParallelMode()
    assert global_batch_size and trainer.micro_batch_size  # the config schema checks both
    layout = MicroBatchLayout.checked(
        global_batch_size, trainer.micro_batch_size, topology.world_size, topology.rank
    )
    return InvariantMode(layout, micro_batch_seed, shard_optimizer=shard)
