"""Run under torchrun (gloo): the sharded exchange against one process adding every block itself.

Each rank makes the block sums of every rank from one seeded generator (so each knows what the
others hold), keeps its own, and exchanges them. Vectors: float32 with a length no world size
divides, float64 shorter than the world size, bfloat16; statistics of a few micro-batches per rank.
Prints one line "exchange ok W=<world> received=<bytes>" on rank 0; any difference raises.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from foundation.process import process_launch
from runtime.process_group import leave_process_group
from training.parallel.exchange import GatherExchange, ReduceScatterExchange
from training.parallel.reduction_tree import rank_block, tree_sum

MICRO_BATCHES = 8
SIZES = {torch.float32: 1001, torch.float64: 3, torch.bfloat16: 37}
STATS_PER_MICRO_BATCH = 5


def blocks(world: int) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """Every rank's block sums (one vector per dtype) and statistics, far apart in magnitude so
    that another order of additions gives other bits."""
    generator = torch.Generator().manual_seed(0)
    sums = [
        [
            (torch.randn(size, generator=generator, dtype=torch.float64) * 10.0 ** (q % 5)).to(
                dtype
            )
            for dtype, size in SIZES.items()
        ]
        for q in range(world)
    ]
    per_rank = MICRO_BATCHES // world * STATS_PER_MICRO_BATCH
    stats = [torch.randn(per_rank, generator=generator) for _ in range(world)]
    return sums, stats


def main() -> None:
    dist.init_process_group("gloo")
    launch = process_launch()
    world, rank = launch.world_size, launch.rank
    sums, stats = blocks(world)
    exchange = ReduceScatterExchange(MICRO_BATCHES, world, rank)
    totals, every_stats = exchange(sums[rank], stats[rank])

    for index in range(len(SIZES)):
        known = {rank_block(MICRO_BATCHES, world, q): sums[q][index] for q in range(world)}
        alone = tree_sum(0, MICRO_BATCHES, _no_leaf, known)
        assert totals[index].dtype == alone.dtype and totals[index].shape == alone.shape
        assert torch.equal(totals[index], alone), f"dtype {alone.dtype}: other bits"
    assert torch.equal(every_stats, torch.cat(stats))

    gathered, gathered_stats = GatherExchange(MICRO_BATCHES, world, rank)(
        sums[rank][:1], stats[rank]
    )
    assert torch.equal(gathered[0], totals[0]) and torch.equal(gathered_stats, every_stats)

    received = torch.tensor([exchange.received_bytes], dtype=torch.int64)
    dist.all_reduce(received, op=dist.ReduceOp.MAX)
    if rank == 0:
        print(f"exchange ok W={world} received={int(received)}", flush=True)
    del exchange  # nothing may hold the group when it is left
    leave_process_group(torch.device("cpu"))


def _no_leaf(j: int) -> torch.Tensor:
    raise AssertionError(f"micro-batch {j} is inside a block")


if __name__ == "__main__":
    main()
