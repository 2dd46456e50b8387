"""albumentations pipelines shared by the datasets.

Randomness in these pipelines is positioned per sample by `seeding.per_sample` (never by global
seeds, which albumentations 2.x ignores), so any transform added here stays reproducible.
"""

from __future__ import annotations

import albumentations as A
import cv2


def small_image_train(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> A.Compose:
    """CIFAR-style: pad-and-crop translation, horizontal flip, mild photometric jitter."""
    pad = size // 8
    return A.Compose(
        [
            A.PadIfNeeded(size + 2 * pad, size + 2 * pad, border_mode=cv2.BORDER_CONSTANT, fill=0),
            A.RandomCrop(size, size),
            A.HorizontalFlip(p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.Normalize(mean=mean, std=std),
            A.ToTensorV2(),
        ]
    )


def small_image_eval(mean: tuple[float, ...], std: tuple[float, ...]) -> A.Compose:
    return A.Compose([A.Normalize(mean=mean, std=std), A.ToTensorV2()])
