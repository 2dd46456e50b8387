"""Dataset registry: a fork adds a dataset with one file in data/ and one `@register_dataset` name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from engine.config import DataConfig


@dataclass
class DatasetSplits:
    """What a dataset builder returns: raw splits plus their (seeded) albumentations pipelines.

    `train` and `val` yield `(image, label)` with image an HxWxC uint8 numpy array; randomness
    belongs in the transforms, which the loader seeds per sample.
    """

    train: Dataset
    val: Dataset
    num_classes: int
    train_transform: Any
    eval_transform: Any


DatasetBuilder = Callable[[DataConfig], DatasetSplits]
DATASETS: dict[str, DatasetBuilder] = {}


def register_dataset(name: str) -> Callable[[DatasetBuilder], DatasetBuilder]:
    def decorate(builder: DatasetBuilder) -> DatasetBuilder:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        DATASETS[name] = builder
        return builder

    return decorate
