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
def test_the_cpu_imagefolder_preset_trains_here_and_a_subset_covers_every_class(
    tmp_path: Path,
) -> None:
    """configs/imagefolder_cpu.yaml as a CPU user runs it, on a small tree of real image files
    listed class by class; `data.subset` draws from every class, not the first ones."""
    root = write_image_tree(tmp_path / "images")  # 3 classes x 8 files, sorted by class
    flags = ["--config", "configs/imagefolder_cpu.yaml", f"data.root={root}", "trainer.epochs=1"]
    run = run_train(tmp_path / "run", *flags, "data.batch_size=4", "data.subset=6", tiny=False)
    manifest = run.manifest()
    assert manifest["status"] == "completed" and manifest["device"] == "cpu"
    subset = manifest["data_subset"]
    assert subset["stratified"] and subset["per_class"] == {"0": 2, "1": 2, "2": 2}, subset
    assert run.weights()["features.0.0.weight"].shape[0] == 32  # the small CNN, width 32


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
