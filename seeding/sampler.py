"""A DistributedSampler whose permutation comes from the seed plan and that can start mid-epoch.

Kept from torch's DistributedSampler: every rank computes the same permutation, pads it by
repeating its head to a multiple of the world size (or drops the tail), and takes
`perm[rank::world_size]`. Changed: the permutation of epoch e is drawn from
`plan.seed("sampler", e)` instead of `manual_seed(seed + epoch)` (where seed 0 / epoch 3 equals
seed 3 / epoch 0); each index is yielded as a `SampleKey(index, epoch)` so the dataset can seed
its augmentation per sample; and `set_epoch(epoch, start=k)` skips the first k samples of this
rank without loading them (mid-epoch resume).

Two layouts where a step must hold the same samples in the same places for any world size W:
- `global_batch=B` (training): the epoch is padded to whole global batches; step k is positions
  [kB, (k+1)B) of the permutation and rank r takes its r-th contiguous slice of B / W.
- `chunk=c` (evaluation): the samples, in order, are cut into chunks of c, dealt to the ranks
  round-robin (chunk i to rank i mod W); with batches of c, every batch is one whole chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DistributedSampler

from seeding.per_sample import SampleKey
from seeding.plan import SeedPlan


class SeededDistributedSampler(DistributedSampler):
    def __init__(
        self,
        dataset: Sized,
        plan: SeedPlan,
        num_replicas: int,
        rank: int,
        shuffle: bool = True,
        drop_last: bool = False,
        even_shards: bool = True,
        global_batch: int | None = None,
        chunk: int | None = None,
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, drop_last=drop_last
        )
        self.global_batch = global_batch
        self.chunk = chunk
        if global_batch is not None:
            if global_batch % num_replicas:
                raise ValueError(f"global batch {global_batch} is not divisible by {num_replicas}")
            steps = -(-len(dataset) // global_batch)
            self.total_size = steps * global_batch
            self.num_samples = self.total_size // num_replicas
        elif not even_shards or chunk is not None:
            # Evaluation: every sample exactly once overall, shards may differ in size.
            self.total_size = len(dataset)
            self.num_samples = len(self._own(list(range(self.total_size))))
        self.plan = plan
        self.start = 0
        # Reset after every iteration: an epoch loop that forgets set_epoch fails loudly
        # instead of silently repeating the previous order.
        self._epoch_was_set = False

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip this rank's first `start` samples."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start {start} is outside this rank's {self.num_samples} samples")
        super().set_epoch(epoch)
        self.start = start
        self._epoch_was_set = True

    def indices(self, epoch: int) -> list[int]:
        """This rank's sample indices of `epoch`, in order (without iterating)."""
        return self._own(self.permutation(epoch))

    def permutation(self, epoch: int | None = None) -> list[int]:
        """The padded (or truncated) global order of an epoch (default: the current one),
        identical on every rank."""
        size = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.plan.seed("sampler", self.epoch if epoch is None else epoch))
            order = torch.randperm(size, generator=generator).tolist()
        else:
            order = list(range(size))
        if self.drop_last:
            return order[: self.total_size]
        padding = self.total_size - len(order)
        while padding > 0:
            order += order[:padding]
            padding = self.total_size - len(order)
        return order

    def __iter__(self) -> Iterator[SampleKey]:
        if not self._epoch_was_set:
            raise RuntimeError(
                "call set_epoch(epoch) before each epoch: every epoch needs its own order"
            )
        self._epoch_was_set = False
        own = self._own(self.permutation())
        epoch = self.epoch
        return (SampleKey(index, epoch) for index in own[self.start :])

    def _own(self, order: list[int]) -> list[int]:
        """This rank's part of the epoch's order, in the layout chosen at construction."""
        rank, world = self.rank, self.num_replicas
        if self.global_batch is not None:
            share = self.global_batch // world
            return [
                index
                for start in range(0, self.total_size, self.global_batch)
                for index in order[start + rank * share : start + (rank + 1) * share]
            ]
        if self.chunk is not None:
            size = self.chunk
            starts = range(rank * size, len(order), world * size)
            return [index for start in starts for index in order[start : start + size]]
        return order[rank : self.total_size : world]

    def __len__(self) -> int:
        return self.num_samples - self.start
