"""Per-sample augmentation, sampler and worker seeding, with real DataLoader worker processes."""

from __future__ import annotations

import random

import albumentations as A
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from data.loaders import SeededAugmentedDataset, build_data
from data.synthetic import SyntheticDataConfig
from seeding import (
    SampleKey,
    SampleRandomness,
    SeededDistributedSampler,
    WorkerSeeder,
    capture_rng_state,
    data_parallel,
    restore_rng_state,
)
from seeding.per_sample import PhiloxRandom

SMALL = SyntheticDataConfig(batch_size=16, synthetic={"train_size": 96, "val_size": 32})


def epoch_batches(
    num_workers: int, persistent: bool, epochs: tuple[int, ...], world_size: int = 1, rank: int = 0
) -> list[list[torch.Tensor]]:
    config = SMALL.model_copy(update={"num_workers": num_workers, "persistent_workers": persistent})
    bundle = build_data(config, data_parallel(7, rank), world_size, rank, pin_memory=False)
    return [[images for images, _ in bundle.train.epoch(epoch)] for epoch in epochs]


def test_augmented_batches_identical_for_0_1_2_workers_persistent_or_not() -> None:
    reference = epoch_batches(0, False, (0, 1))
    for workers, persistent in ((1, False), (2, False), (2, True)):
        other = epoch_batches(workers, persistent, (0, 1))
        for epoch_ref, epoch_other in zip(reference, other, strict=True):
            assert len(epoch_ref) == len(epoch_other)
            for a, b in zip(epoch_ref, epoch_other, strict=True):
                assert torch.equal(a, b), (workers, persistent)


def test_augmentation_differs_between_epochs_for_the_same_sample() -> None:
    splits_dataset = build_data(
        SMALL, data_parallel(7, 0), 1, 0, pin_memory=False
    ).train.loader.dataset
    first = splits_dataset[SampleKey(index=5, epoch=0)][0]
    assert torch.equal(first, splits_dataset[SampleKey(index=5, epoch=0)][0])
    assert not torch.equal(first, splits_dataset[SampleKey(index=5, epoch=1)][0])


def test_same_sample_same_augmentation_on_any_rank_and_world_size() -> None:
    key = SampleKey(index=11, epoch=2)
    views = [
        build_data(
            SMALL, data_parallel(7, rank), world, rank, pin_memory=False
        ).train.loader.dataset[key][0]
        for world, rank in ((1, 0), (2, 1), (4, 3))
    ]
    assert all(torch.equal(views[0], view) for view in views[1:])


def test_child_transforms_decide_independently() -> None:
    flips = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    randomness = SampleRandomness(data_parallel(3, 0).augment_key())
    dataset = SeededAugmentedDataset(
        _Images(2000), flips, randomness, WorkerSeeder(data_parallel(3, 0))
    )
    agree = 0
    for index in range(2000):
        out = dataset[SampleKey(index, 0)][0]
        horizontal = bool(out[0, -1] == 1)  # the marker pixel moved right
        vertical = bool(out[-1, 0] == 1)  # ... or down
        agree += horizontal == vertical
    assert 0.45 < agree / 2000 < 0.55


class _Images(Dataset):
    """Images with one marker pixel at the top-left corner."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        image = np.zeros((4, 4), dtype=np.uint8)
        image[0, 0] = 1
        return image, 0


def test_philox_random_facade_is_a_full_random_random() -> None:
    randomness = SampleRandomness((1, 2))
    randomness.reseed(0, 0)
    facade = randomness.python
    assert isinstance(facade, random.Random)

    def draw_one_of_each() -> list[object]:
        return [
            facade.random(),
            facade.randint(0, 9),
            facade.choice("abc"),
            facade.uniform(2, 3),
            facade.getrandbits(100),
            facade.gauss(0, 1),
        ]

    draws = draw_one_of_each()
    randomness.reseed(0, 0)
    assert draws == draw_one_of_each()
    assert 0 <= draws[4] < 2**100
    values = [facade.random() for _ in range(20000)]
    assert 0.49 < sum(values) / len(values) < 0.51
    with pytest.raises(TypeError):
        PhiloxRandom(randomness.bit_generator).getstate()


def test_sampler_same_permutation_on_every_rank_and_rank_stride() -> None:
    plan = data_parallel(9, 0)
    samplers = [
        SeededDistributedSampler(range(10), data_parallel(9, r), num_replicas=3, rank=r)
        for r in range(3)
    ]
    for sampler in samplers:
        sampler.set_epoch(4)
    permutation = samplers[0].permutation()
    assert all(s.permutation() == permutation for s in samplers)
    assert len(permutation) == 12 and permutation[10:] == permutation[:2]  # padded with its head
    shards = [[key.index for key in sampler] for sampler in samplers]
    assert shards == [permutation[r::3] for r in range(3)]
    assert all(key.epoch == 4 for sampler in samplers for key in (sampler.set_epoch(4) or sampler))
    other = SeededDistributedSampler(range(10), plan, num_replicas=1, rank=0)
    other.set_epoch(5)
    assert other.permutation() != SeededDistributedSampler.permutation(samplers[0])


def test_sampler_refuses_an_epoch_without_set_epoch() -> None:
    sampler = SeededDistributedSampler(range(8), data_parallel(1, 0), num_replicas=1, rank=0)
    with pytest.raises(RuntimeError, match="set_epoch"):
        iter(sampler)
    sampler.set_epoch(0)
    list(sampler)
    with pytest.raises(RuntimeError, match="set_epoch"):
        iter(sampler)  # a second epoch without set_epoch is refused too


def test_sampler_start_skips_consumed_samples() -> None:
    sampler = SeededDistributedSampler(range(20), data_parallel(1, 0), num_replicas=2, rank=1)
    sampler.set_epoch(3)
    full = [key.index for key in sampler]
    sampler.set_epoch(3, start=4)
    assert [key.index for key in sampler] == full[4:]
    assert len(sampler) == len(full) - 4


class _GlobalRngDataset(Dataset):
    """User code that (against advice) draws from the global RNGs in __getitem__."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, key: SampleKey) -> torch.Tensor:
        return torch.tensor(
            [random.random(), float(np.random.random()), float(torch.rand(()))], dtype=torch.float64
        )


def _worker_draws(rank: int, epoch: int) -> dict[int, torch.Tensor]:
    plan = data_parallel(21, rank)
    seeder = WorkerSeeder(plan)
    dataset = _SeededGlobal(seeder)
    sampler = SeededDistributedSampler(dataset, plan, num_replicas=1, rank=0, shuffle=False)
    sampler.set_epoch(epoch)
    seeder.epoch = epoch
    loader = DataLoader(
        dataset,
        batch_size=1,
        sampler=sampler,
        num_workers=2,
        worker_init_fn=seeder,
        generator=torch.Generator(),
    )
    return {i: batch[0] for i, batch in enumerate(loader)}


class _SeededGlobal(_GlobalRngDataset):
    def __init__(self, seeder: WorkerSeeder) -> None:
        self.seeder = seeder

    def __getitem__(self, key: SampleKey) -> torch.Tensor:
        self.seeder.enter_epoch(key.epoch)
        return super().__getitem__(key)


def test_global_rngs_in_workers_are_reproducible_and_distinct_per_worker_rank_epoch() -> None:
    first = _worker_draws(rank=0, epoch=0)
    assert all(torch.equal(first[i], v) for i, v in _worker_draws(rank=0, epoch=0).items())
    # Batches 0 and 1 come from workers 0 and 1: the workers' streams differ.
    assert not torch.equal(first[0], first[1])
    # python, numpy and torch draws inside one worker are not the same stream.
    assert len(set(first[0].tolist())) == 3
    assert not torch.equal(first[0], _worker_draws(rank=1, epoch=0)[0])
    assert not torch.equal(first[0], _worker_draws(rank=0, epoch=1)[0])


def test_rng_state_round_trip_through_weights_only_load(tmp_path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.standard_normal()
    state = capture_rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.random(), torch.rand(3))
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(loaded)
    again = (random.random(), np.random.random(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])
