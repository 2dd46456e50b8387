"""Augmentation as configuration, with real runs: a declared pipeline equal to a recipe gives
the recipe's bits, a random declared pipeline is reproducible for 0 or 2 workers and across a
mid-epoch resume, a bad one stops before anything is written, and TensorBoard shows the first
batch as the model sees it (read back from the event file)."""

from __future__ import annotations

import re
from pathlib import Path

import albumentations as A
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from data.augment import resolve
from tests.helpers.runs import ReferenceRuns, assert_same_weights, run_command, run_train

pytestmark = pytest.mark.slow

# Digits-like data: no flip, a small shift and rotation, brightness; declared inline in YAML.
DECLARED = (
    "data.augment.train={transform: {__class_fullname__: Compose, transforms: ["
    "{__class_fullname__: Affine, translate_percent: [-0.1, 0.1], rotate: [-15, 15], p: 0.8},"
    "{__class_fullname__: RandomBrightnessContrast, p: 0.5}]}}"
)


@pytest.mark.filterwarnings("ignore:Argument")  # albumentations' own 'padding' of PadIfNeeded
def test_a_pipeline_declared_in_a_file_equal_to_a_recipe_gives_its_bits(
    references: ReferenceRuns, tmp_path: Path
) -> None:
    path = tmp_path / "pad_crop_flip.yaml"
    A.save(A.from_dict(resolve("pad_crop_flip", 32, "k")), str(path), data_format="yaml")
    declared = run_train(tmp_path / "run", f"data.augment.train={path}")
    assert_same_weights(references.tiny(1).weights(), declared.weights())


def test_a_declared_random_pipeline_is_reproducible_for_any_workers_and_a_resume(
    tmp_path: Path,
) -> None:
    straight = run_train(tmp_path / "straight", DECLARED)
    workers = run_train(tmp_path / "workers", DECLARED, "data.num_workers=2")
    assert_same_weights(straight.weights(), workers.weights())
    run_train(tmp_path / "resumed", DECLARED, "trainer.max_steps=7")  # mid-epoch (12 per epoch)
    resumed = run_train(
        tmp_path / "resumed", DECLARED, "trainer.max_steps=null", "--resume", "auto"
    )
    assert resumed.manifest()["resumed_from_step"] == 7
    assert_same_weights(straight.weights(), resumed.weights())
    recorded = straight.manifest()["augmentation"]
    assert recorded["albumentations"] == A.__version__
    names = [t["__class_fullname__"] for t in recorded["train"]["transforms"]]
    assert names == ["Affine", "RandomBrightnessContrast", "Normalize", "ToTensorV2"]
    saved = straight.run.read_config()
    assert saved is not None
    assert saved["data"]["augment"]["train"]["transform"]["transforms"][0]["rotate"] == [
        -15.0,
        15.0,
    ]


def test_a_bad_pipeline_stops_before_anything_is_written(tmp_path: Path) -> None:
    bad = "data.augment.train={transform: {__class_fullname__: HorizontalFlipp}}"
    refused = run_train(tmp_path, bad, check=False)
    assert refused.returncode == 2
    assert refused.process.stderr.strip().splitlines() == [
        "error: data.augment.train: unknown transform 'HorizontalFlipp' (did you mean "
        "'HorizontalFlip'?)"
    ]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_tensorboard_shows_the_first_batch_augmented_and_not(references: ReferenceRuns) -> None:
    run = references.tiny(1)
    events = EventAccumulator(str(run.run.tensorboard_dir), size_guidance={"images": 0})
    events.Reload()
    tags = set(events.Tags()["images"])
    assert tags == {"augmentation/train_batch_augmented", "augmentation/train_batch_unaugmented"}
    for tag in tags:
        image = events.Images(tag)[0]
        assert image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
        assert (image.width, image.height) == (8 * 32, 2 * 32)  # 16 images of 32 x 32
    assert 0 < run.manifest()["augmentation_preview_s"] < 5
    assert "Images tab" in run.process.stdout
    # The command it prints is one a user can paste: the venv's TensorBoard through make.
    pasted = re.search(r"\((make tensorboard LOGDIR=\S+);", run.process.stdout)
    assert pasted is not None, run.process.stdout
    shown = run_command(["make", "-s", "--no-print-directory", "-n", *pasted.group(1).split()[1:]])
    assert shown.stdout.strip() == f".venv/bin/tensorboard --logdir {run.run_dir}/tb", shown
