"""Model registry: a fork adds a model with one file in models/ and one `@register_model`:

    @register_model("mine", MineConfig)  # MineConfig(ModelConfig): name: Literal["mine"] = "mine"
    def build_mine(config: MineConfig, num_classes: int, image_size: int) -> nn.Module: ...

`image_size` is what the data pipelines make of every sample (the data tells, not the config).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from foundation.registry import Registry
from models.config import ModelConfig

ModelBuilder = Callable[[Any, int, int], nn.Module]
"""(its ModelConfig subclass, number of classes, input image size) -> module."""

MODELS: Registry[ModelBuilder] = Registry("model")


def register_model(name: str, config: type[ModelConfig]) -> Callable[[ModelBuilder], ModelBuilder]:
    return MODELS.register(name, config)


def build_model(config: ModelConfig, num_classes: int, image_size: int) -> nn.Module:
    return MODELS[config.name](config, num_classes, image_size)
