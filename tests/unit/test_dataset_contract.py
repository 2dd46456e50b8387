"""What the template relies on from every registered dataset, a fork's included: each is built
through the example it registers (`register_dataset(..., example=...)`), in this process. A fork
adds a dataset without editing this file; one registered without an example is skipped, saying
so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import seeding
from configs import load_config
from data import DATASETS
from data.loaders import build_data
from foundation.errors import UserError
from seeding import SampleKey


def example_overrides(name: str, folder: Path) -> dict[str, object]:
    example = DATASETS.entry(name).extras.get("example")
    if example is None:
        pytest.skip(f"dataset {name!r} registers no example: give register_dataset one")
    folder.mkdir(parents=True, exist_ok=True)
    return example(folder)


def example_config(name: str, overrides: dict[str, object], *more: str):  # type: ignore[no-untyped-def]
    assignments = [f"{key}={value}" for key, value in overrides.items()]
    return load_config("configs/default.yaml", overrides=[f"data.name={name}", *assignments, *more])


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_a_dataset_gives_what_the_template_relies_on(name: str, tmp_path: Path) -> None:
    config = example_config(name, example_overrides(name, tmp_path), "data.batch_size=4")
    splits = DATASETS[name](config.data)
    assert splits.num_classes >= 2 and len(splits.train) > 0 and len(splits.val) > 0
    assert len(splits.mean) == len(splits.std) == 3 and all(s > 0 for s in splits.std)
    for split in (splits.train, splits.val):
        for index in range(min(4, len(split))):  # type: ignore[arg-type]
            image, label = split[index]
            assert isinstance(image, np.ndarray) and image.dtype == np.uint8, type(image)
            assert image.ndim == 3 and image.shape[2] == 3, image.shape
            assert isinstance(label, int) and 0 <= label < splits.num_classes, label

    data = build_data(config.data, seeding.data_parallel(0, 0), 1, 0, pin_memory=False)
    size = config.data.image_size
    assert data.image_size == size and data.num_classes == splits.num_classes
    train = data.train.dataset
    first, label = train[SampleKey(0, 0)]
    assert first.shape == (3, size, size) and first.dtype == torch.float32
    assert torch.equal(first, train[SampleKey(0, 0)][0])  # a pure function of (epoch, index)
    assert any(  # the training pipeline is random, and new every epoch
        not torch.equal(train[SampleKey(i, 0)][0], train[SampleKey(i, 1)][0]) for i in range(4)
    )
    images, labels = next(iter(data.train.epoch(0)))
    assert images.shape == (4, 3, size, size) and labels.dtype == torch.int64


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_a_dataset_that_is_not_there_is_one_line(name: str, tmp_path: Path) -> None:
    """The example's paths moved to an empty folder: one line that names where it looked."""
    written = tmp_path / "example"
    overrides = example_overrides(name, written)
    empty = tmp_path / "nothing here"
    moved = {
        key: str(value).replace(str(written), str(empty))
        for key, value in overrides.items()
        if str(value).startswith(str(written))
    }
    if not moved:
        pytest.skip(f"dataset {name!r} reads nothing from disk")
    config = example_config(name, {**overrides, **moved})
    with pytest.raises(UserError) as caught:
        DATASETS[name](config.data)
    assert len(str(caught.value).splitlines()) == 1 and "nothing here" in str(caught.value)
