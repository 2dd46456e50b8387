"""The one registry helper behind `register_dataset` and `register_model`."""

from __future__ import annotations

from typing import Literal

import pytest

from data import DATASETS
from foundation.errors import UserError
from foundation.registry import Registry
from foundation.section import Section
from models import MODELS


class WidgetA(Section):
    name: Literal["a"] = "a"


def test_a_name_registered_twice_is_refused() -> None:
    registry: Registry = Registry("widget")
    registry.register("a", WidgetA)(lambda: 1)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        registry.register("a", WidgetA)(lambda: 2)


def test_a_section_must_be_named_as_registered() -> None:
    with pytest.raises(ValueError, match=r"WidgetA\.name must default to 'b', not 'a'"):
        Registry("widget").register("b", WidgetA)


def test_an_unknown_name_is_a_one_line_user_error_with_the_closest_name() -> None:
    with pytest.raises(UserError, match=r"unknown model 'resnet19' \(did you mean 'resnet18'\?\)"):
        MODELS.check("resnet19")
    names = ", ".join(sorted(DATASETS))  # a fork's datasets included
    with pytest.raises(UserError, match=f"registered: {names}"):
        DATASETS["imagenet"]


def test_the_shipped_datasets_and_models_are_registered() -> None:
    """A fork adds its own; the template's stay (a fork that removes one edits this test)."""
    assert {"cifar10", "imagefolder", "synthetic"} <= set(DATASETS)
    assert {"resnet18", "smallcnn"} <= set(MODELS)
