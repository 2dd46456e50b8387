"""Dataset registry: a fork adds a dataset with one file in data/ and one `@register_dataset` name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from data.config import DataConfig
from foundation.registry import Registry


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
DATASETS: Registry[DatasetBuilder] = Registry("dataset")
register_dataset = DATASETS.register
