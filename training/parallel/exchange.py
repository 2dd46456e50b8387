"""How the world-size-invariant step's partial sums travel between ranks, in a fixed order.

Each rank holds the sum of its block of micro-batches (a node of the reduction tree, one flat
vector per dtype) and the BatchNorm statistics of each of its micro-batches. Every rank needs the
sum over all blocks, added in the tree's order, and every micro-batch's statistics, in order.

- `ReduceScatterExchange` (used for W > 1): cut each vector into W shards; `all_to_all_single` sends
  shard s of every rank's block sum to rank s; rank s adds the W block sums of its shard over the
  upper levels of the tree; `all_gather_into_tensor` returns the reduced shards (and every rank's
  statistics, riding along) to everyone. Each rank receives 2 (W - 1) / W of the vector, as in a
  ring all-reduce, and every element is added in the same order as in one process, so the bits
  do not change. Neither collective adds anything (they move bytes), which is why gloo's and
  NCCL's own reduction algorithms never touch the numbers.
- `GatherExchange`: every rank's whole block sum to everyone (`all_gather`), then the tree's
  upper levels on every rank: the same bits, (W - 1) times the vector received. The mode's first
  implementation; kept for `make bench-invariance` to measure against.

Both count the bytes this rank receives (`received_bytes`, cumulative) for the benchmark.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.distributed as dist

from training.parallel.reduction_tree import no_leaf, rank_block, tree_sum


class Exchange(Protocol):
    received_bytes: int

    def __call__(
        self, sums: list[torch.Tensor], stats: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(this rank's block sums, one flat vector per dtype; this rank's micro-batches'
        statistics, concatenated) -> (the global sums in tree order; every micro-batch's
        statistics, in global order, concatenated)."""
        ...


class NoExchange:
    """One process: its block is the whole tree."""

    received_bytes = 0

    def __call__(
        self, sums: list[torch.Tensor], stats: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        return sums, stats


class ReduceScatterExchange:
    def __init__(self, micro_batches: int, world_size: int, rank: int) -> None:
        self.micro_batches = micro_batches
        self.world = world_size
        self.rank = rank
        self.received_bytes = 0

    def __call__(
        self, sums: list[torch.Tensor], stats: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        world = self.world
        reduced = []
        for vector in sums:
            shards = _padded(vector, world).view(world, -1)
            received = torch.empty_like(shards)
            dist.all_to_all_single(received, shards)  # row q: rank q's block sum, my shard
            self._count(received, rows=world)
            known = {rank_block(self.micro_batches, world, q): received[q] for q in range(world)}
            reduced.append(tree_sum(0, self.micro_batches, no_leaf, known))  # type: ignore[arg-type]
        # The statistics ride with the first vector (the float32 one, which holds the counters).
        first = torch.cat([reduced[0], stats.to(reduced[0].dtype)])
        gathered = [self._gather(first), *(self._gather(shard) for shard in reduced[1:])]
        width = reduced[0].numel()
        rows = gathered[0].view(world, -1)
        totals = [rows[:, :width].reshape(-1)[: sums[0].numel()]]
        totals += [
            row.reshape(-1)[: vector.numel()]
            for row, vector in zip(gathered[1:], sums[1:], strict=True)
        ]
        return totals, rows[:, width:].reshape(-1).to(stats.dtype)

    def _gather(self, shard: torch.Tensor) -> torch.Tensor:
        out = torch.empty(self.world * shard.numel(), dtype=shard.dtype, device=shard.device)
        dist.all_gather_into_tensor(out, shard.contiguous())
        self._count(out, rows=self.world)
        return out

    def _count(self, tensor: torch.Tensor, rows: int) -> None:
        """What came from the other ranks: all rows but this rank's own."""
        self.received_bytes += tensor.numel() * tensor.element_size() * (rows - 1) // rows


class GatherExchange:
    def __init__(self, micro_batches: int, world_size: int, rank: int) -> None:
        self.micro_batches = micro_batches
        self.world = world_size
        self.received_bytes = 0

    def __call__(
        self, sums: list[torch.Tensor], stats: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        if any(vector.dtype != torch.float32 for vector in sums):
            raise ValueError("the all_gather exchange handles float32 parameters only")
        mine = torch.cat([*sums, stats.float()])
        gathered = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(gathered, mine)
        self.received_bytes += mine.numel() * mine.element_size() * (self.world - 1)
        sizes = [vector.numel() for vector in sums]
        totals, offset = [], 0
        for size in sizes:
            known = {
                rank_block(self.micro_batches, self.world, q): g[offset : offset + size]
                for q, g in enumerate(gathered)
            }
            totals.append(tree_sum(0, self.micro_batches, no_leaf, known))  # type: ignore[arg-type]
            offset += size
        return totals, torch.cat([g[offset:] for g in gathered])


def _padded(vector: torch.Tensor, parts: int) -> torch.Tensor:
    """`vector` with zeros appended to a multiple of `parts` (shards of equal size)."""
    extra = -vector.numel() % parts
    return torch.cat([vector, vector.new_zeros(extra)]) if extra else vector
