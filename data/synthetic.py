"""The offline default: a synthetic 10-class, 32x32 RGB image-classification dataset.

Each class is a random "texture" (a sum of coloured oriented gratings). A sample is its class
texture shifted by up to 4 pixels, with random contrast, a colour cast, a faint texture of another
class mixed in, and strong pixel noise. Translation and noise make augmentation and dropout
matter; the default small CNN still reaches >= 90 % validation accuracy in a few epochs.

Generated from its own data seed (`data.synthetic.seed`), never from the training seed: changing
the training seed changes the training, not the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field
from torch.utils.data import Dataset

from data.augment import AugmentConfig
from data.config import DataConfig
from data.registry import DatasetSplits, register_dataset
from foundation.section import Section
from seeding.derive import SEED_LIMIT

NUM_CLASSES = 10
GRATINGS_PER_CLASS = 3
MAX_SHIFT = 4
NOISE_STD = 1.3
MAX_MIX = 0.8
_SPLIT_CODES = {"train": 1, "val": 2}


class ArrayImageDataset(Dataset):
    """(image HxWxC uint8, label) pairs held in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])

    def class_labels(self) -> np.ndarray:
        """The labels without reading an image (a stratified `data.subset`)."""
        return self.labels


def class_textures(data_seed: int, size: int) -> np.ndarray:
    """One unit-variance texture per class, shape (classes, size, size, 3)."""
    rng = np.random.default_rng(np.random.SeedSequence(data_seed, spawn_key=(0,)))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) / size
    textures = np.zeros((NUM_CLASSES, size, size, 3))
    for label in range(NUM_CLASSES):
        for _ in range(GRATINGS_PER_CLASS):
            frequency = rng.uniform(1.0, 4.0)
            angle = rng.uniform(0.0, np.pi)
            phase = rng.uniform(0.0, 2 * np.pi)
            colour = rng.normal(size=3)
            wave = np.cos(2 * np.pi * frequency * (xs * np.cos(angle) + ys * np.sin(angle)) + phase)
            textures[label] += wave[..., None] * colour
        textures[label] /= textures[label].std()
    return textures


def generate_split(data_seed: int, split: str, count: int, size: int = 32) -> ArrayImageDataset:
    textures = class_textures(data_seed, size).astype(np.float32)
    rng = np.random.default_rng(np.random.SeedSequence(data_seed, spawn_key=(_SPLIT_CODES[split],)))
    labels = rng.integers(0, NUM_CLASSES, count)
    distractors = (labels + rng.integers(1, NUM_CLASSES, count)) % NUM_CLASSES
    shifts = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, (count, 2))
    contrast = rng.uniform(0.5, 1.5, (count, 1, 1, 1)).astype(np.float32)
    mix = rng.uniform(0.0, MAX_MIX, (count, 1, 1, 1)).astype(np.float32)
    cast = rng.normal(0.0, 0.4, (count, 1, 1, 3)).astype(np.float32)
    images = rng.standard_normal((count, size, size, 3), dtype=np.float32)
    images *= NOISE_STD
    # Circular shift as a gather: row i of sample n reads row (i - dy) % size of its texture.
    rows = (np.arange(size)[None, :] - shifts[:, :1]) % size
    cols = (np.arange(size)[None, :] - shifts[:, 1:]) % size
    shifted = textures[labels[:, None, None], rows[:, :, None], cols[:, None, :]]
    images += contrast * shifted + mix * textures[distractors] + cast
    pixels = np.clip(128.0 + 48.0 * images, 0, 255).astype(np.uint8)
    return ArrayImageDataset(pixels, labels.astype(np.int64))


class SyntheticOptions(Section):
    train_size: int = Field(6000, ge=1, description="training samples")
    val_size: int = Field(1000, ge=1, description="validation samples")
    seed: int = Field(
        20240607, ge=0, lt=SEED_LIMIT, description="data seed, independent of the training seed"
    )


class SyntheticDataConfig(DataConfig):
    """`data` for the synthetic dataset: nothing on disk, generated from its own seed."""

    name: Literal["synthetic"] = "synthetic"
    synthetic: SyntheticOptions = SyntheticOptions()
    augment: AugmentConfig = AugmentConfig(train="pad_crop_flip", eval="normalize")


def small_example(folder: Path) -> dict[str, Any]:
    """Nothing to write: a small draw."""
    return {"data.synthetic.train_size": 64, "data.synthetic.val_size": 32}


@register_dataset("synthetic", SyntheticDataConfig, example=small_example)
def build_synthetic(config: SyntheticDataConfig) -> DatasetSplits:
    options = config.synthetic
    train = generate_split(options.seed, "train", options.train_size, config.image_size)
    val = generate_split(options.seed, "val", options.val_size, config.image_size)
    mean = tuple(float(m) for m in train.images.reshape(-1, 3).mean(axis=0) / 255.0)
    std = tuple(float(s) for s in train.images.reshape(-1, 3).std(axis=0) / 255.0)
    return DatasetSplits(train=train, val=val, num_classes=NUM_CLASSES, mean=mean, std=std)
