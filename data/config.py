"""The `data` section of the config: what the datasets and the seeded loaders read.

A fork that adds a dataset option adds it here (and nowhere else): the root config picks this
section up, so typos in the new key are caught like any other.
"""

from __future__ import annotations

from pydantic import Field

from foundation.section import RUNTIME, Section
from seeding.derive import SEED_LIMIT


class SyntheticConfig(Section):
    train_size: int = Field(6000, ge=1)
    val_size: int = Field(1000, ge=1)
    seed: int = Field(20240607, ge=0, lt=SEED_LIMIT, description="data seed, not the training seed")


class DataConfig(Section):
    name: str = "synthetic"
    root: str = Field("datasets", json_schema_extra=RUNTIME)
    subset: int | None = Field(None, ge=1)
    batch_size: int = Field(128, ge=1, description="per process, unless global_batch_size is set")
    global_batch_size: int | None = Field(
        None, ge=1, description="samples per step over all processes (each takes B / W)"
    )
    num_workers: int = Field(0, ge=0, json_schema_extra=RUNTIME)
    persistent_workers: bool = Field(False, json_schema_extra=RUNTIME)
    download: bool = Field(False, json_schema_extra=RUNTIME)
    image_size: int = Field(32, ge=8)
    skip_bad_files: bool = False
    synthetic: SyntheticConfig = SyntheticConfig()
