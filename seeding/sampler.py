"""A DistributedSampler whose permutation comes from the seed plan and that can start mid-epoch.

Kept from torch's DistributedSampler: every rank computes the same permutation, pads it by
repeating its head to a multiple of the world size (or drops the tail), and takes
`perm[rank::world_size]`. Changed: the permutation of epoch e is drawn from
`plan.seed("sampler", e)` instead of `manual_seed(seed + epoch)` (where seed 0 / epoch 3 equals
seed 3 / epoch 0); each index is yielded as a `SampleKey(index, epoch)` so the dataset can seed
its augmentation per sample; and `set_epoch(epoch, start=k)` skips the first k samples of this
rank without loading them (mid-epoch resume).
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
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, drop_last=drop_last
        )
        if not even_shards:
            # Evaluation: every sample exactly once overall, shards may differ by one sample.
            self.total_size = len(dataset)
            self.num_samples = len(range(rank, self.total_size, num_replicas))
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

    def permutation(self) -> list[int]:
        """The padded (or truncated) global order of this epoch, identical on every rank."""
        size = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.plan.seed("sampler", self.epoch))
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
        own = self.permutation()[self.rank : self.total_size : self.num_replicas]
        epoch = self.epoch
        return (SampleKey(index, epoch) for index in own[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start
