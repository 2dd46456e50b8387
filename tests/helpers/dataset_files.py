"""Real on-disk dataset formats, written by the tests themselves: CIFAR-10's pickled batches
and an ImageFolder tree of image files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from data.cifar10 import FOLDER


def write_cifar10(root: Path, per_batch: int = 40, test_size: int = 60) -> Path:
    """The layout and pickle format of torchvision's `cifar-10-batches-py` (small, so md5s differ)."""
    folder = root / FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(name: str, count: int) -> None:
        labels = rng.integers(0, 10, count)
        # Class-dependent colour so that a short training has something to learn.
        planes = np.repeat((labels[:, None] * 25).astype(np.uint8), 3072, axis=1)
        data = (planes + rng.integers(0, 40, (count, 3072))).astype(np.uint8)
        content = {
            b"batch_label": name.encode(),
            b"labels": labels.tolist(),
            b"data": data,
            b"filenames": [f"{i}.png".encode() for i in range(count)],
        }
        with (folder / name).open("wb") as stream:
            pickle.dump(content, stream, protocol=2)

    for index in range(1, 6):
        batch(f"data_batch_{index}", per_batch)
    batch("test_batch", test_size)
    with (folder / "batches.meta").open("wb") as stream:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, stream, protocol=2)
    return folder


def write_image_tree(
    root: Path, classes: tuple[str, ...] = ("cat", "dog", "fox"), per_class: int = 8
) -> Path:
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))
                colour = np.array([80 * label, 255 - 80 * label, 128], dtype=np.uint8)
                pixels = np.clip(colour + rng.integers(0, 30, (*size, 3)), 0, 255).astype(np.uint8)
                extension = ("png", "jpg", "bmp")[index % 3]
                Image.fromarray(pixels).save(folder / f"{index}.{extension}")
    return root
