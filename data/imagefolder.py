"""Your own images: `<data.root>/train/<class>/*` and `<data.root>/val/<class>/*`.

Any size and any format PIL reads. Every file is checked once when the dataset is built, so a
corrupt or unreadable image stops the run with one line naming it before training starts (or, with
`data.skip_bad_files=true`, is skipped with a warning and a count). Augmentation goes through the
per-sample seeding like every dataset: a pure function of (seed, epoch, index).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import Field
from torch.utils.data import Dataset

from data.augment import AugmentConfig
from data.config import DataConfig
from data.registry import DatasetSplits, register_dataset
from foundation.errors import UserError
from foundation.faults import DataFileError
from foundation.section import RUNTIME

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFiles(Dataset):
    """The files found when the run started, read again at every access.

    Why a fault, not a skip, when one vanishes or is truncated later: skipping would silently
    change what the run trains on; the line names the file and the sample index, and the run
    stops like any fault (the checkpoints stay, `--resume auto` continues once it is fixed)."""

    def __init__(self, samples: list[tuple[Path, int]], split: str) -> None:
        self.samples = samples
        self.split = split

    def __len__(self) -> int:
        return len(self.samples)

    def class_labels(self) -> list[int]:
        """The labels from the folder names, without opening a file (a stratified subset)."""
        return [label for _, label in self.samples]

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB")), label
        except (OSError, UnidentifiedImageError, ValueError) as error:
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise DataFileError(
                f"cannot read image {path} ({self.split} sample {index}): {reason}"
            ) from None


def _readable(path: Path) -> str | None:
    """None if PIL can decode the file, else the reason."""
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError, ValueError) as error:
        return str(error) or type(error).__name__
    return None


def _scan_split(split_dir: Path, skip_bad_files: bool) -> tuple[list[str], list[tuple[Path, int]]]:
    if not split_dir.is_dir():
        raise UserError(
            f"image folder split not found: {split_dir} (expected {split_dir}/<class>/<images>)"
        )
    classes = sorted(
        entry.name
        for entry in split_dir.iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if not classes:
        raise UserError(f"no class folders in {split_dir}")
    samples: list[tuple[Path, int]] = []
    skipped = []
    for label, name in enumerate(classes):
        files = sorted(
            p for p in (split_dir / name).rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        if not files:
            raise UserError(f"class folder {split_dir / name} is empty")
        for path in files:
            problem = _readable(path)
            if problem is None:
                samples.append((path, label))
            elif skip_bad_files:
                skipped.append(path)
            else:
                raise UserError(
                    f"cannot read image {path}: {problem} (data.skip_bad_files=true skips such files)"
                )
    if skipped:
        print(
            f"warning: skipped {len(skipped)} unreadable file(s) in {split_dir}, e.g. {skipped[0]}",
            file=sys.stderr,
        )
    return classes, samples


class ImageFolderDataConfig(DataConfig):
    """`data` for a folder of images per class: `<root>/{train,val}/<class>/*`."""

    name: Literal["imagefolder"] = "imagefolder"
    root: str = Field(
        "datasets",
        description="holds train/<class>/* and val/<class>/* (the data may move)",
        json_schema_extra=RUNTIME,
    )
    skip_bad_files: bool = Field(
        False, description="skip unreadable files with a warning and a count, instead of stopping"
    )
    augment: AugmentConfig = AugmentConfig(train="random_resized_crop", eval="resize_center_crop")


def write_example(
    root: Path, classes: tuple[str, ...] = ("cat", "dog", "fox"), per_class: int = 8
) -> dict[str, Any]:
    """Image files of several sizes and formats in the folder layout: for tests and the
    template's dataset contract checks."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))
                colour = np.array([80 * label, 255 - 80 * label, 128], dtype=np.uint8)
                pixels = np.clip(colour + rng.integers(0, 30, (*size, 3)), 0, 255).astype(np.uint8)
                extension = ("png", "jpg", "bmp")[index % 3]
                Image.fromarray(pixels).save(folder / f"{index}.{extension}")
    return {"data.root": str(root), "data.image_size": 32}


@register_dataset("imagefolder", ImageFolderDataConfig, example=write_example)
def build_imagefolder(config: ImageFolderDataConfig) -> DatasetSplits:
    root = Path(config.root)
    train_classes, train_samples = _scan_split(root / "train", config.skip_bad_files)
    val_classes, val_samples = _scan_split(root / "val", config.skip_bad_files)
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise UserError(
            f"train and val classes differ: only in train {only_train}, only in val {only_val}"
        )
    return DatasetSplits(
        train=ImageFiles(train_samples, "train"),
        val=ImageFiles(val_samples, "val"),
        num_classes=len(train_classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=tuple(train_classes),
    )
