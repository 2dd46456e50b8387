"""The world-size-invariant step's micro-batches: where a rank's block of the global batch sits
in the one summation tree, which world sizes can share it, and the pinned CPU threads.

Why a layout of its own: every forward and backward must have the same shape for any world
size W, so a step is a global batch of B samples cut into M = B / b micro-batches of fixed size
b in global order, and rank r computes the contiguous block of M / W micro-batches that is a
node of the summation tree (training/parallel/reduction_tree.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from foundation.errors import UserError
from training.parallel.reduction_tree import Node, rank_block, serving_world_sizes

INTRA_OP_THREADS = 1  # what torchrun gives every worker; the same for a single process here


@dataclass(frozen=True)
class MicroBatchLayout:
    """Where this rank's micro-batches sit in the global batch."""

    global_batch: int  # B
    micro_batch: int  # b
    world_size: int
    rank: int

    @property
    def micro_batches(self) -> int:  # M
        return self.global_batch // self.micro_batch

    @property
    def block(self) -> Node:
        return rank_block(self.micro_batches, self.world_size, self.rank)

    @classmethod
    def checked(
        cls, global_batch: int, micro_batch: int, world_size: int, rank: int
    ) -> MicroBatchLayout:
        """The layout, or a one-line UserError naming the world sizes that work for B and b."""
        micro_batches = global_batch // micro_batch
        serving = serving_world_sizes(micro_batches)
        if world_size not in serving:
            raise UserError(
                f"trainer.world_size_invariant: {world_size} processes cannot share "
                f"data.global_batch_size={global_batch} in micro-batches of "
                f"trainer.micro_batch_size={micro_batch} ({micro_batches} micro-batches, each "
                f"rank a subtree of one summation tree); world sizes that work: "
                f"{', '.join(map(str, serving))}"
            )
        return cls(global_batch, micro_batch, world_size, rank)

    def note(self) -> str:
        """For the determinism report."""
        serving = ", ".join(map(str, serving_world_sizes(self.micro_batches)))
        return (
            f"world-size invariant: {self.micro_batches} micro-batches of {self.micro_batch}; "
            f"the same weights and metrics for world sizes {serving} on the same hardware type "
            f"and library versions; intra-op threads pinned to {INTRA_OP_THREADS} on CPU; on GPU "
            "the debug/eval determinism flags apply (no cudnn.benchmark, TF32 or AMP)"
        )

    def describe(self) -> dict[str, int | list[int]]:
        return {
            "global_batch_size": self.global_batch,
            "micro_batch_size": self.micro_batch,
            "micro_batches": self.micro_batches,
            "serving_world_sizes": serving_world_sizes(self.micro_batches),
            "intra_op_threads": INTRA_OP_THREADS,
        }


def pin_threads(device: torch.device) -> None:
    """On CPU the intra-op thread count changes results; on GPU it does not matter."""
    if device.type == "cpu":
        torch.set_num_threads(INTRA_OP_THREADS)
