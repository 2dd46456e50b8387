"""Augmentation as configuration (data/augment.py): recipes, albumentations' own serialized form
inline or in a file, and every kind of bad declaration refused at config load in one line.

End to end (real runs: a declared pipeline equal to a recipe gives its bits; a random declared
pipeline is identical for 0 or 2 workers and across a resume; the grid in TensorBoard) in
end_to_end/test_augmentation.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pytest
import torch

from configs import load_config
from data.augment import RECIPES, pipeline, resolve
from foundation.errors import UserError
from seeding import SampleRandomness, bind_transform

DEFAULT = "configs/default.yaml"
DIGITS = {
    "transform": {
        "__class_fullname__": "Compose",
        "transforms": [
            {"__class_fullname__": "Resize", "height": 32, "width": 32, "p": 1.0},
            {"__class_fullname__": "Affine", "translate_percent": [-0.05, 0.05], "p": 0.5},
        ],
    }
}


def test_every_recipe_resolves_to_albumentations_own_form_and_back() -> None:
    for name in RECIPES:
        resolved = resolve(name, 32, "data.augment.train")
        assert resolved["__version__"] == A.__version__
        assert resolve(resolved, 32, "data.augment.train") == resolved  # idempotent


@pytest.mark.filterwarnings("ignore:Argument")  # albumentations' own 'padding' of PadIfNeeded
def test_a_file_and_inline_form_equal_to_a_recipe_resolve_to_it(tmp_path: Path) -> None:
    recipe = resolve("pad_crop_flip", 32, "k")
    path = tmp_path / "pipeline.yaml"
    A.save(A.from_dict(recipe), str(path), data_format="yaml")
    assert resolve(str(path), 32, "k") == recipe
    assert resolve(recipe["transform"], 32, "k") == recipe  # only the `transform` part


def test_a_transform_without_p_takes_its_own_default() -> None:
    resolved = resolve(
        {"transform": {"__class_fullname__": "Resize", "height": 32, "width": 32}}, 32, "k"
    )
    assert resolved["transform"]["transforms"][0]["p"] == 1.0  # A.Resize's, not from_dict's 0.5


def test_the_config_holds_the_resolved_pipeline() -> None:
    config = load_config(DEFAULT, overrides=["data.augment.train=resize"])
    train = config.data.augment.train
    assert (
        isinstance(train, dict)
        and train["transform"]["transforms"][0]["__class_fullname__"] == "Resize"
    )
    inline = load_config(DEFAULT, overrides=[f"data.augment.train={DIGITS}"])
    assert [
        t["__class_fullname__"] for t in inline.data.augment.train["transform"]["transforms"]
    ] == [
        "Resize",
        "Affine",
    ]


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        (
            "pad_crop_flp",
            "data.augment.train: unknown recipe 'pad_crop_flp' (did you mean 'pad_crop_flip'?)",
        ),
        (
            {"transform": {"__class_fullname__": "HorizontalFlipp", "p": 0.5}},
            "data.augment.train: unknown transform 'HorizontalFlipp' (did you mean 'HorizontalFlip'?)",
        ),
        (
            {
                "transform": {
                    "__class_fullname__": "Compose",
                    "transforms": [{"__class_fullname__": "HorizontalFlip", "q": 1}],
                }
            },
            "data.augment.train: HorizontalFlip: unknown argument 'q'",
        ),
        (
            {
                "transform": {
                    "__class_fullname__": "Compose",
                    "transforms": [{"__class_fullname__": "HorizontalFlip", "p": 3}],
                }
            },
            "data.augment.train: HorizontalFlip: p: Input should be less than or equal to 1 (got 3)",
        ),
        (
            {
                "transform": {
                    "__class_fullname__": "Compose",
                    "transforms": [{"__class_fullname__": "Affine", "scale": "big"}],
                }
            },
            "data.augment.train: Affine: scale",
        ),
        (
            {
                "transform": {
                    "__class_fullname__": "Compose",
                    "transforms": [{"__class_fullname__": "Normalize"}],
                }
            },
            "data.augment.train: leave out Normalize: the template appends",
        ),
        (
            {
                "transform": {
                    "__class_fullname__": "Compose",
                    "transforms": [{"__class_fullname__": "Resize", "height": 16, "width": 16}],
                }
            },
            "data.augment.train: turns a 32x32 image into a Tensor of shape (3, 16, 16), not a 3x32x32 float tensor",
        ),
        ({"transforms": []}, "data.augment.train: not albumentations' serialized form"),
        ("missing.yaml", "data.augment.train: cannot read missing.yaml"),
    ],
)
def test_a_bad_declaration_is_one_line_naming_the_transform(declared: Any, message: str) -> None:
    with pytest.raises(UserError) as caught:
        resolve(declared, 32, "data.augment.train")
    assert str(caught.value).startswith(message), str(caught.value)
    assert len(str(caught.value).splitlines()) == 1


def test_a_bad_declaration_stops_the_config_load() -> None:
    with pytest.raises(UserError, match=r"^data\.augment\.eval: unknown recipe 'nope'"):
        load_config(DEFAULT, overrides=["data.augment.eval=nope"])


def test_a_declared_random_pipeline_is_a_pure_function_of_the_sample() -> None:
    """Per-sample seeding applies to whatever is declared: the same (epoch, index), the same
    pixels, wherever and whenever it is drawn; another epoch, other pixels."""
    flips = {
        "transform": {
            "__class_fullname__": "Compose",
            "transforms": [
                {"__class_fullname__": "Affine", "rotate": [-30, 30], "p": 1.0},
                {"__class_fullname__": "HorizontalFlip", "p": 0.5},
            ],
        }
    }
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)

    def draw(epoch: int, index: int) -> torch.Tensor:
        compose = pipeline(flips, 32, (0.5,) * 3, (0.25,) * 3)
        randomness = SampleRandomness((7, 11))
        bind_transform(compose, randomness)
        randomness.reseed(epoch, index)
        return compose(image=image)["image"]

    assert torch.equal(draw(0, 5), draw(0, 5))
    assert not torch.equal(draw(0, 5), draw(1, 5))
