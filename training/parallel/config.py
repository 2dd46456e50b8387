"""The `parallel` section and the dp x tp mesh's arithmetic (which rank is which shard)."""

from __future__ import annotations

from pydantic import Field

from foundation.errors import UserError
from foundation.process import next_commands, process_launch
from foundation.section import RUNTIME, Section


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
        "gradients and optimizer state (training/parallel/fully_sharded.py); one process trains unsharded. In "
        "the world-size-invariant mode: the optimizer state only, split over the ranks (ZeRO-1, "
        "training/parallel/optimizer_partition.py), bit for bit. A resume with the other value continues",
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
