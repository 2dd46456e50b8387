"""CIFAR-10 and ImageFolder read from real on-disk formats that the tests write themselves."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.cifar10 import FOLDER, build_cifar10
from data.imagefolder import build_imagefolder
from engine.config import DataConfig
from engine.errors import UserError
from tests.conftest import assert_same_weights, run_train


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


def test_cifar10_reader_reads_the_format(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    splits = build_cifar10(DataConfig(name="cifar10", root=str(tmp_path)))
    assert len(splits.train) == 200 and len(splits.val) == 60 and splits.num_classes == 10
    image, label = splits.train[0]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and 0 <= label < 10


def test_cifar10_missing_files_name_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"CIFAR-10 not found: expected .*cifar-10-batches-py.*data\.download=true"
    ):
        build_cifar10(DataConfig(name="cifar10", root=str(tmp_path)))


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("echo pwned",))

    with (folder / "data_batch_1").open("wb") as stream:
        pickle.dump({b"data": Exploit(), b"labels": []}, stream)
    with pytest.raises(UserError, match="refusing to load"):
        build_cifar10(DataConfig(name="cifar10", root=str(tmp_path)))


@pytest.mark.slow
def test_short_training_on_cifar10_files(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "data")
    run = run_train(
        tmp_path / "runs", "data.name=cifar10", f"data.root={tmp_path / 'data'}", "trainer.epochs=1"
    )
    assert run.manifest()["status"] == "completed"
    assert run.manifest()["final_metrics"]["val_acc"] > 0.1


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


def test_imagefolder_reads_any_size_and_format(tmp_path: Path) -> None:
    write_image_tree(tmp_path)
    splits = build_imagefolder(DataConfig(name="imagefolder", root=str(tmp_path), image_size=32))
    assert splits.num_classes == 3 and len(splits.train) == 24 and len(splits.val) == 24
    image, _ = splits.train[5]
    out = splits.eval_transform(image=image)["image"]
    assert tuple(out.shape) == (3, 32, 32)


def test_imagefolder_errors(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "corrupt")
    bad = tmp_path / "corrupt" / "train" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UserError, match=re.escape(f"cannot read image {bad}")):
        build_imagefolder(DataConfig(name="imagefolder", root=str(tmp_path / "corrupt")))

    write_image_tree(tmp_path / "empty")
    for path in (tmp_path / "empty" / "val" / "fox").iterdir():
        path.unlink()
    with pytest.raises(UserError, match=r"class folder .*fox is empty"):
        build_imagefolder(DataConfig(name="imagefolder", root=str(tmp_path / "empty")))

    write_image_tree(tmp_path / "mismatch")
    (tmp_path / "mismatch" / "val" / "fox").rename(tmp_path / "mismatch" / "val" / "wolf")
    with pytest.raises(
        UserError,
        match=r"train and val classes differ: only in train \['fox'\], only in val \['wolf'\]",
    ):
        build_imagefolder(DataConfig(name="imagefolder", root=str(tmp_path / "mismatch")))

    with pytest.raises(UserError, match="image folder split not found"):
        build_imagefolder(DataConfig(name="imagefolder", root=str(tmp_path / "nothing")))


def test_imagefolder_can_skip_bad_files_with_a_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image_tree(tmp_path)
    (tmp_path / "train" / "cat" / "bad.jpg").write_bytes(b"garbage")
    splits = build_imagefolder(
        DataConfig(name="imagefolder", root=str(tmp_path), skip_bad_files=True)
    )
    assert len(splits.train) == 24
    assert "skipped 1 unreadable file(s)" in capsys.readouterr().err


@pytest.mark.slow
def test_imagefolder_training_is_reproducible_and_a_corrupt_image_is_named(tmp_path: Path) -> None:
    root = write_image_tree(tmp_path / "images")
    args = (
        "data.name=imagefolder",
        f"data.root={root}",
        "data.batch_size=8",
        "trainer.epochs=2",
        "data.num_workers=2",
    )
    first = run_train(tmp_path / "a", *args)
    second = run_train(tmp_path / "b", *args)
    assert_same_weights(first.weights(), second.weights())
    bad = root / "val" / "cat" / "zz.png"
    bad.write_bytes(b"not an image")
    failed = run_train(tmp_path / "c", *args, check=False)
    assert failed.returncode == 2
    lines = failed.process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read image {bad}")
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_resnet18_trains_on_the_synthetic_data(tmp_path: Path) -> None:
    run = run_train(
        tmp_path,
        "model.name=resnet18",
        "data.batch_size=16",
        "trainer.max_steps=3",
        "data.synthetic.val_size=32",
    )
    assert run.manifest()["final_step"] == 3
    assert "layer4.1.conv2.weight" in run.weights()
