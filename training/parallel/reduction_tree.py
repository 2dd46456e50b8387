"""One summation order for any number of processes: a balanced binary tree over micro-batches.

Floating-point addition is not associative: `(g0+g1)+(g2+g3)` is not `((g0+g1)+g2)+g3`. The
world-size-invariant mode adds per-micro-batch values over the halving tree on [0, M), split at
the midpoint, whatever the world size W: rank r owns the contiguous block of M / W micro-batches
starting at r * M / W, which must be a node of that tree, and sums it locally; the blocks' sums
are then added over the tree's upper levels (training/parallel/exchange.py moves them between ranks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Node = tuple[int, int]  # [lo, hi) over micro-batch indices
Value = TypeVar("Value")


def split(lo: int, hi: int) -> int:
    return (lo + hi) // 2


def tree_nodes(lo: int, hi: int) -> set[Node]:
    """Every node of the halving tree on [lo, hi)."""
    nodes = {(lo, hi)}
    if hi - lo > 1:
        mid = split(lo, hi)
        nodes |= tree_nodes(lo, mid) | tree_nodes(mid, hi)
    return nodes


def rank_block(micro_batches: int, world_size: int, rank: int) -> Node:
    per_rank = micro_batches // world_size
    return rank * per_rank, (rank + 1) * per_rank


def serving_world_sizes(micro_batches: int) -> list[int]:
    """The world sizes whose rank blocks are all nodes of the tree on [0, micro_batches)."""
    nodes = tree_nodes(0, micro_batches)
    return [
        world
        for world in range(1, micro_batches + 1)
        if micro_batches % world == 0
        and all(rank_block(micro_batches, world, r) in nodes for r in range(world))
    ]


def tree_sum(
    lo: int,
    hi: int,
    leaf: Callable[[int], Value],
    known: dict[Node, Value],
    add: Callable[[Value, Value], Value] = lambda left, right: left + right,  # type: ignore[operator]
) -> Value:
    """The sum over [lo, hi) in tree order: a node in `known` is taken as it is, a leaf is
    computed by `leaf(j)` (in index order, depth first: at most log2(M) partial sums live)."""
    if (lo, hi) in known:
        return known[(lo, hi)]
    if hi - lo == 1:
        return leaf(lo)
    mid = split(lo, hi)
    left = tree_sum(lo, mid, leaf, known, add)
    return add(left, tree_sum(mid, hi, leaf, known, add))


def no_leaf(j: int) -> object:
    raise AssertionError(f"micro-batch {j} belongs to a rank block; its sum should be known")
