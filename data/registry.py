"""Dataset registry: a fork adds a dataset with one file in data/ and one `@register_dataset`.

    @register_dataset("mine", MineDataConfig, example=write_mine_example)
    def build_mine(config: MineDataConfig) -> DatasetSplits: ...

`example(folder)` writes a small copy of the dataset's on-disk format into `folder` and returns
the config overrides that point at it (or, for a dataset with nothing on disk, only make it
small). The template's contract tests (tests/unit/test_dataset_contract.py) build every
registered dataset through it and check what the template relies on; a dataset registered
without one is skipped there, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from data.config import DataConfig
from foundation.registry import Registry


@dataclass
class DatasetSplits:
    """What a dataset builder returns: the raw splits and their per-channel statistics.

    `train` and `val` yield `(image, label)`: an HxWx3 uint8 numpy array and an int in
    [0, num_classes). They hold no randomness: every random choice belongs in the augmentation
    pipelines (data.augment.*), which the loader seeds per sample; the loader also appends
    `Normalize(mean, std)` and `ToTensorV2()` to them.
    """

    train: Dataset
    val: Dataset
    num_classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None = None  # label -> name (ImageFolder: its folders)


DatasetBuilder = Callable[[Any], DatasetSplits]  # (its DataConfig subclass) -> splits
ExampleWriter = Callable[[Path], dict[str, Any]]  # folder -> config overrides
DATASETS: Registry[DatasetBuilder] = Registry("dataset")


def register_dataset(
    name: str, config: type[DataConfig], example: ExampleWriter | None = None
) -> Callable[[DatasetBuilder], DatasetBuilder]:
    return DATASETS.register(name, config, example=example)
