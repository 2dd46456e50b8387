"""CIFAR-10 in torchvision's on-disk format: `<data.root>/cifar-10-batches-py/`.

Why a reader of our own instead of `torchvision.datasets.CIFAR10`: torchvision checks every file's
md5 against the official archive, so it rejects anything but the full official files — including
the small files in the same format that the tests write. This reader checks the structure instead
(shapes, dtypes, label range) and loads the pickles with an unpickler that only admits the numpy
types the format uses: a pickle from anywhere else cannot run code. `data.download=true` fetches
the official archive through torchvision, which verifies its md5.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from data.augment import AugmentConfig
from data.config import DataConfig
from data.registry import DatasetSplits, register_dataset
from data.synthetic import ArrayImageDataset
from foundation.errors import UserError
from foundation.section import RUNTIME

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
NUM_CLASSES = 10

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path, samples: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file, read whole. `samples` names the sample indices it holds, for errors: the
    whole dataset is read into memory when the run starts, so a file that vanishes or is
    truncated later cannot affect a running job; the next start names it."""
    try:
        with path.open("rb") as stream:
            batch = _NumpyOnlyUnpickler(stream, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, EOFError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as error:
        reason = getattr(error, "strerror", None) or error
        raise UserError(f"{path} ({samples}) is not a CIFAR-10 batch file: {reason}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise UserError(
            f"{path} ({samples}) is not a CIFAR-10 batch file: data has shape {data.shape}"
        )
    if labels.size and not 0 <= labels.min() <= labels.max() < NUM_CLASSES:
        raise UserError(f"{path}: labels outside 0..9")
    # Stored as N x (R plane, G plane, B plane) of 32x32: to N x 32 x 32 x 3.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10  # verifies the archive's md5

    CIFAR10(str(root), train=True, download=True)


class Cifar10DataConfig(DataConfig):
    """`data` for CIFAR-10 in torchvision's format."""

    name: Literal["cifar10"] = "cifar10"
    root: str = Field(
        "datasets",
        description="holds cifar-10-batches-py/ (the data may move: not part of a resume's "
        "fingerprint)",
        json_schema_extra=RUNTIME,
    )
    download: bool = Field(
        False, description="fetch the official archive once (network)", json_schema_extra=RUNTIME
    )
    augment: AugmentConfig = AugmentConfig(train="pad_crop_flip", eval="normalize")


def write_example(root: Path, per_batch: int = 40, test_size: int = 60) -> dict[str, Any]:
    """The layout and pickle format of torchvision's `cifar-10-batches-py`, small (so its md5s
    differ from the official ones): for tests and the template's dataset contract checks."""
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
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
    batch(TEST_FILE, test_size)
    with (folder / "batches.meta").open("wb") as stream:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, stream, protocol=2)
    return {"data.root": str(root)}


@register_dataset("cifar10", Cifar10DataConfig, example=write_example)
def build_cifar10(config: Cifar10DataConfig) -> DatasetSplits:
    root = Path(config.root)
    folder = root / FOLDER
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).is_file()]
    if missing and config.download:
        _download(root)
        missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"CIFAR-10 not found: expected {folder}/{{data_batch_1..5,test_batch}} "
            f"(missing {missing[0]}); fetch it with `make train CONFIG=configs/cifar10_resnet18.yaml "
            f'ARGS="data.download=true"` (needs the network) or point data.root at a copy'
        )
    parts = []
    for name in TRAIN_FILES:
        first = sum(len(labels) for _, labels in parts)
        parts.append(_read_batch(folder / name, f"train samples from {first}"))
    train = ArrayImageDataset(
        np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    )
    val = ArrayImageDataset(*_read_batch(folder / TEST_FILE, "val samples from 0"))
    return DatasetSplits(train=train, val=val, num_classes=NUM_CLASSES, mean=MEAN, std=STD)
