"""Model registry: a fork adds a model with one file in models/ and one `@register_model` name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from foundation.registry import Registry
from models.config import ModelConfig

ModelBuilder = Callable[[ModelConfig, int, int], nn.Module]
"""(model config, number of classes, input image size) -> module."""

MODELS: Registry[ModelBuilder] = Registry("model")
register_model = MODELS.register


def build_model(config: ModelConfig, num_classes: int, image_size: int) -> nn.Module:
    return MODELS[config.name](config, num_classes, image_size)
