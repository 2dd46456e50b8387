"""Model registry: a fork adds a model with one file in models/ and one `@register_model` name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from engine.config import ModelConfig

ModelBuilder = Callable[[ModelConfig, int, int], nn.Module]
"""(model config, number of classes, input image size) -> module."""

MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = builder
        return builder

    return decorate


def build_model(config: ModelConfig, num_classes: int, image_size: int) -> nn.Module:
    return MODELS[config.name](config, num_classes, image_size)
