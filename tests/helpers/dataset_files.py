"""Real on-disk dataset formats for the tests: each dataset writes its own small example
(data/cifar10.py, data/imagefolder.py); these wrappers return the folder, as the tests want it."""

from __future__ import annotations

from pathlib import Path

from data import cifar10, imagefolder


def write_cifar10(root: Path, per_batch: int = 40, test_size: int = 60) -> Path:
    cifar10.write_example(root, per_batch, test_size)
    return root / cifar10.FOLDER


def write_image_tree(
    root: Path, classes: tuple[str, ...] = ("cat", "dog", "fox"), per_class: int = 8
) -> Path:
    imagefolder.write_example(root, classes, per_class)
    return root
