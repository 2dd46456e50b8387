"""Datasets and the seeded data pipeline. Every module in this package is imported on first use,
so a new dataset is one file with a `@register_dataset("name")` builder."""

import importlib
import os
import pkgutil

# albumentations asks PyPI for a newer release when it is imported: no network at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from data.config import DataConfig
from data.registry import DATASETS, DatasetSplits, register_dataset

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DATASETS", "DataConfig", "DatasetSplits", "register_dataset"]
