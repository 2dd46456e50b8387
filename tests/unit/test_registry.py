"""The one registry helper behind `register_dataset` and `register_model`."""

from __future__ import annotations

import pytest

from data import DATASETS
from foundation.errors import UserError
from foundation.registry import Registry
from models import MODELS


def test_a_name_registered_twice_is_refused() -> None:
    registry: Registry = Registry("widget")
    registry.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        registry.register("a")(lambda: 2)


def test_an_unknown_name_is_a_one_line_user_error_with_the_closest_name() -> None:
    with pytest.raises(UserError, match=r"unknown model 'resnet19' \(did you mean 'resnet18'\?\)"):
        MODELS.check("resnet19")
    with pytest.raises(UserError, match="registered: cifar10, imagefolder, synthetic"):
        DATASETS["imagenet"]


def test_the_shipped_datasets_and_models_are_registered() -> None:
    assert list(DATASETS) == ["cifar10", "imagefolder", "synthetic"]
    assert list(MODELS) == ["resnet18", "smallcnn"]
