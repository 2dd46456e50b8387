"""Seeded DataLoaders: wires a dataset to the seed plan (sampler, per-sample augmentation, workers).

Why one object per split with an `epoch(...)` method: the sampler's epoch, the workers' epoch and
the resume offset must change together, every epoch. Making `epoch()` the only way to get an
iterator means no training loop can forget `set_epoch`.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import albumentations as A
import torch
from torch.utils.data import DataLoader, Dataset

from data.augment import pipeline, sample_problem
from data.config import DataConfig
from data.registry import DATASETS, DatasetSplits
from data.subset import seeded_subset
from foundation.errors import UserError
from seeding import (
    EVAL_LANE,
    TRAIN_LANE,
    SampleKey,
    SampleRandomness,
    SeededDistributedSampler,
    SeedPlan,
    WorkerSeeder,
    bind_transform,
)


class SeededAugmentedDataset(Dataset):
    """Receives `SampleKey(index, epoch)`, positions the augmentation stream, then transforms."""

    def __init__(
        self,
        source: Dataset,
        transform: Any,
        randomness: SampleRandomness,
        worker_seeder: WorkerSeeder,
    ) -> None:
        self.source = source
        self.transform = transform
        self.randomness = randomness
        self.worker_seeder = worker_seeder
        bind_transform(transform, randomness)

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, int]:
        self.worker_seeder.enter_epoch(key.epoch)
        self.randomness.reseed(key.epoch, key.index)
        image, label = self.source[key.index]
        return self.transform(image=image)["image"], label


@dataclass(frozen=True)
class _WorkerStart:
    """`worker_init_fn`: a worker ignores SIGTERM and SIGHUP, then seeds itself.

    Why: torchrun stops a worker group by sending SIGTERM to each rank's whole process group,
    DataLoader workers included, and torch's worker handler dies of it; the rank then fails with
    "DataLoader worker ... is killed by signal" before it can write the checkpoint that SIGTERM
    asks for (runtime/signals.py). A worker whose rank is gone exits by itself (torch watches the
    parent), and torchrun's SIGKILL 30 s later ends anything left. SIGHUP likewise: a closing
    terminal sends it to the whole foreground process group."""

    seeder: WorkerSeeder

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.seeder(worker_id)


@dataclass
class SeededLoader:
    loader: DataLoader
    sampler: SeededDistributedSampler
    worker_seeder: WorkerSeeder
    batch_size: int
    dataset: SeededAugmentedDataset

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Any]:
        """The batches of `epoch` for this rank, skipping the first `start_batch` unloaded."""
        self.sampler.set_epoch(
            epoch, start=min(start_batch * self.batch_size, self.sampler.num_samples)
        )
        self.worker_seeder.epoch = epoch
        return iter(self.loader)

    def batches_per_epoch(self) -> int:
        return -(-self.sampler.num_samples // self.batch_size)

    @property
    def samples_per_rank(self) -> int:
        return self.sampler.num_samples


@dataclass
class DataBundle:
    train: SeededLoader
    val: SeededLoader
    num_classes: int
    train_size: int
    image_size: int  # what the pipelines make of every sample: the model is built for it
    pipelines: dict[str, A.Compose]  # "train", "eval": the full pipelines, Normalize included
    mean: tuple[float, ...]
    std: tuple[float, ...]
    subset: dict[str, Any] | None = None  # data.subset's draw (data/subset.py), for the manifest
    class_names: tuple[str, ...] | None = None  # label -> name, where the dataset knows them

    def describe_pipelines(self) -> dict[str, Any]:
        """For the manifest: albumentations' serialized form of both, and its version."""
        return {
            "albumentations": A.__version__,
            **{split: A.to_dict(compose)["transform"] for split, compose in self.pipelines.items()},
        }

    def preview(self, count: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `count` samples of this rank's first training batch as the model sees them
        (augmented, epoch 0) and through the evaluation pipeline (not augmented), as images in
        [0, 1]. Drawn from the per-sample stream like training: nothing of training changes."""
        keys = self.train.sampler.indices(0)[:count]
        augmented = [self.train.dataset[SampleKey(index, 0)][0] for index in keys]
        source = self.train.dataset.source
        plain = [self.pipelines["eval"](image=source[index][0])["image"] for index in keys]
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        images = [torch.stack(batch) * std + mean for batch in (augmented, plain)]
        return images[0].clamp(0, 1), images[1].clamp(0, 1)


def _seeded_loader(
    source: Dataset,
    transform: Any,
    plan: SeedPlan,
    config: DataConfig,
    world_size: int,
    rank: int,
    train: bool,
    pin_memory: bool,
    batch_size: int,
    layout: dict[str, int | None],
) -> SeededLoader:
    worker_seeder = WorkerSeeder(plan)
    randomness = SampleRandomness(plan.augment_key(), lane=TRAIN_LANE if train else EVAL_LANE)
    dataset = SeededAugmentedDataset(source, transform, randomness, worker_seeder)
    sampler = SeededDistributedSampler(
        dataset,
        plan,
        num_replicas=world_size,
        rank=rank,
        shuffle=train,
        even_shards=train,
        **layout,
    )
    generator = torch.Generator()
    generator.manual_seed(plan.seed("loader", 0 if train else 1))
    workers = config.num_workers
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=config.persistent_workers and workers > 0,
        worker_init_fn=_WorkerStart(worker_seeder) if workers > 0 else None,
        generator=generator,
        pin_memory=pin_memory,
        drop_last=False,
    )
    return SeededLoader(loader, sampler, worker_seeder, batch_size, dataset)


def per_process_batch(config: DataConfig, world_size: int) -> int:
    """`data.batch_size`, or this process's share of `data.global_batch_size`."""
    if config.global_batch_size is None:
        return config.batch_size
    if config.global_batch_size % world_size:
        raise UserError(
            f"data.global_batch_size={config.global_batch_size} cannot be shared by "
            f"{world_size} processes: it must be a multiple of the world size"
        )
    return config.global_batch_size // world_size


def build_data(
    config: DataConfig,
    plan: SeedPlan,
    world_size: int,
    rank: int,
    pin_memory: bool,
    eval_chunk: int | None = None,
) -> DataBundle:
    """The train and validation loaders of this rank.

    With `data.global_batch_size`, a training step is one global batch whatever the world size
    (see `SeededDistributedSampler`). `eval_chunk=c` cuts validation into fixed chunks of c
    samples, one per batch, so each batch holds the same samples for any world size (the
    world-size-invariant mode needs that)."""
    splits: DatasetSplits = DATASETS[config.name](config)
    train_source = splits.train
    subset = None
    if config.subset is not None:
        train_source, subset = seeded_subset(splits.train, config.subset, plan.seed("subset"))
    size, augment = config.image_size, config.augment
    pipelines = {
        "train": pipeline(augment.train, size, splits.mean, splits.std, "data.augment.train"),
        "eval": pipeline(augment.eval, size, splits.mean, splits.std, "data.augment.eval"),
    }
    train_batch = per_process_batch(config, world_size)
    train_layout = {"global_batch": config.global_batch_size}
    train = _seeded_loader(
        train_source,
        pipelines["train"],
        plan,
        config,
        world_size,
        rank,
        True,
        pin_memory,
        train_batch,
        train_layout,
    )
    val = _seeded_loader(
        splits.val,
        pipelines["eval"],
        plan,
        config,
        world_size,
        rank,
        False,
        pin_memory,
        eval_chunk or config.batch_size,
        {"chunk": eval_chunk},
    )
    for split, loader in (("train", train), ("eval", val)):
        _check_first_sample(loader, split, size)
    return DataBundle(
        train,
        val,
        splits.num_classes,
        len(train_source),  # type: ignore[arg-type]
        size,
        pipelines,
        splits.mean,
        splits.std,
        subset,
        splits.class_names,
    )


def _check_first_sample(loader: SeededLoader, split: str, size: int) -> None:
    """Before anything is written: the declared pipeline must make the dataset's own images
    what the model takes (at config load it was only tried on an image of the size)."""
    if not len(loader.dataset):
        raise UserError(f"the {'training' if split == 'train' else 'validation'} split is empty")
    image, _ = loader.dataset[SampleKey(0, 0)]
    problem = sample_problem(image, size, f"sample 0 of the {split} split")
    if problem:
        raise UserError(f"data.augment.{split} {problem}")
