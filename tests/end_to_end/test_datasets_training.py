"""CIFAR-10 and ImageFolder read from real on-disk formats that the tests write themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.dataset_files import write_cifar10, write_image_tree
from tests.helpers.runs import TINY_DATA, TINY_MODEL, TINY_RUN, assert_same_weights, run_train


@pytest.mark.slow
def test_short_training_on_cifar10_files(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "data")
    run = run_train(
        tmp_path / "runs",
        *TINY_RUN,
        *TINY_MODEL,
        "data.name=cifar10",
        f"data.root={tmp_path / 'data'}",
        "trainer.epochs=1",
        tiny=False,
    )
    assert run.manifest()["status"] == "completed"
    assert run.manifest()["final_metrics"]["val_acc"] > 0.1


@pytest.mark.slow
def test_imagefolder_training_is_reproducible(tmp_path: Path) -> None:
    root = write_image_tree(tmp_path / "images")
    args = (
        *TINY_RUN,
        *TINY_MODEL,
        "data.name=imagefolder",
        f"data.root={root}",
        "data.batch_size=8",
        "data.num_workers=2",
    )
    first = run_train(tmp_path / "a", *args, tiny=False)
    second = run_train(tmp_path / "b", *args, tiny=False)
    assert_same_weights(first.weights(), second.weights())


@pytest.mark.slow
def test_resnet18_trains_on_the_synthetic_data(tmp_path: Path) -> None:
    run = run_train(
        tmp_path,
        *TINY_DATA,
        *TINY_RUN,
        "model.name=resnet18",
        "data.batch_size=16",
        "trainer.max_steps=2",
        "data.synthetic.val_size=32",
        tiny=False,
    )
    assert run.manifest()["final_step"] == 2
    assert "layer4.1.conv2.weight" in run.weights()
