"""Models. Every module in this package is imported on first use, so a new model is one file
with a `@register_model("name")` builder."""

import importlib
import pkgutil

from models.config import ModelConfig
from models.registry import MODELS, build_model, register_model

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODELS", "ModelConfig", "build_model", "register_model"]
