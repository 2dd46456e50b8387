"""CIFAR-10 and ImageFolder read from real on-disk formats that the tests write themselves."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from data.augment import pipeline
from data.cifar10 import Cifar10DataConfig, build_cifar10
from data.imagefolder import ImageFolderDataConfig, build_imagefolder
from foundation.errors import UserError
from tests.helpers.dataset_files import write_cifar10, write_image_tree


def test_cifar10_reader_reads_the_format(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    splits = build_cifar10(Cifar10DataConfig(root=str(tmp_path)))
    assert len(splits.train) == 200 and len(splits.val) == 60 and splits.num_classes == 10
    image, label = splits.train[0]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and 0 <= label < 10


def test_cifar10_missing_files_name_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"CIFAR-10 not found: expected .*cifar-10-batches-py.*data\.download=true"
    ):
        build_cifar10(Cifar10DataConfig(root=str(tmp_path)))


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("echo pwned",))

    with (folder / "data_batch_1").open("wb") as stream:
        pickle.dump({b"data": Exploit(), b"labels": []}, stream)
    with pytest.raises(UserError, match="refusing to load"):
        build_cifar10(Cifar10DataConfig(root=str(tmp_path)))


def test_imagefolder_reads_any_size_and_format(tmp_path: Path) -> None:
    write_image_tree(tmp_path)
    splits = build_imagefolder(ImageFolderDataConfig(root=str(tmp_path), image_size=32))
    assert splits.num_classes == 3 and len(splits.train) == 24 and len(splits.val) == 24
    image, _ = splits.train[5]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    out = pipeline("resize_center_crop", 32, splits.mean, splits.std)(image=image)["image"]
    assert tuple(out.shape) == (3, 32, 32)


def test_imagefolder_errors(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "corrupt")
    bad = tmp_path / "corrupt" / "train" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UserError, match=re.escape(f"cannot read image {bad}")):
        build_imagefolder(ImageFolderDataConfig(root=str(tmp_path / "corrupt")))

    write_image_tree(tmp_path / "empty")
    for path in (tmp_path / "empty" / "val" / "fox").iterdir():
        path.unlink()
    with pytest.raises(UserError, match=r"class folder .*fox is empty"):
        build_imagefolder(ImageFolderDataConfig(root=str(tmp_path / "empty")))

    write_image_tree(tmp_path / "mismatch")
    (tmp_path / "mismatch" / "val" / "fox").rename(tmp_path / "mismatch" / "val" / "wolf")
    with pytest.raises(
        UserError,
        match=r"train and val classes differ: only in train \['fox'\], only in val \['wolf'\]",
    ):
        build_imagefolder(ImageFolderDataConfig(root=str(tmp_path / "mismatch")))

    with pytest.raises(UserError, match="image folder split not found"):
        build_imagefolder(ImageFolderDataConfig(root=str(tmp_path / "nothing")))


def test_imagefolder_can_skip_bad_files_with_a_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image_tree(tmp_path)
    (tmp_path / "train" / "cat" / "bad.jpg").write_bytes(b"garbage")
    splits = build_imagefolder(ImageFolderDataConfig(root=str(tmp_path), skip_bad_files=True))
    assert len(splits.train) == 24
    assert "skipped 1 unreadable file(s)" in capsys.readouterr().err
