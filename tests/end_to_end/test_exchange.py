"""The sharded exchange of the world-size-invariant mode, on real gloo processes: the same bits as
one process adding every block in tree order, for shards that do not divide the vectors and for
mixed dtypes, with the traffic of a ring all-reduce (tests/helpers/exchange_check.py)."""

from __future__ import annotations

import math

import pytest

from tests.helpers.exchange_check import MICRO_BATCHES, SIZES, STATS_PER_MICRO_BATCH
from tests.helpers.runs import run_command, torchrun

pytestmark = pytest.mark.slow


def expected_received_bytes(world: int) -> int:
    """Per rank: (W - 1) shards of each vector from all_to_all, then (W - 1) reduced shards (the
    float32 one with the other ranks' statistics) from all_gather."""
    total = 0
    stats_per_rank = MICRO_BATCHES // world * STATS_PER_MICRO_BATCH
    for index, (dtype, size) in enumerate(SIZES.items()):
        shard = math.ceil(size / world)
        width = dtype.itemsize
        total += (world - 1) * shard * width  # all_to_all_single
        total += (world - 1) * (shard + (stats_per_rank if index == 0 else 0)) * width
    return total


@pytest.mark.parametrize("world", [2, 8])
def test_sharded_exchange_adds_in_tree_order_with_ring_traffic(world: int) -> None:
    done = run_command(torchrun(world, "tests/helpers/exchange_check.py"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    received = expected_received_bytes(world)
    assert f"exchange ok W={world} received={received}" in done.stdout
    vector_bytes = sum(dtype.itemsize * size for dtype, size in SIZES.items())
    ring = 2 * (world - 1) / world * vector_bytes
    stats_bytes = (world - 1) * MICRO_BATCHES // world * STATS_PER_MICRO_BATCH * 4
    assert received - stats_bytes <= 1.1 * ring  # padding only: at most W - 1 elements a vector
