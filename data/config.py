"""The `data` section's keys that every dataset shares: batching, loading, image size and
augmentation. Each dataset declares its own section on top of this one, beside its builder
(data/synthetic.py, data/cifar10.py, data/imagefolder.py), with its own keys and its own
default augmentation; the config loader picks the section by `data.name`, so a key the chosen
dataset does not read is refused like any unknown key.

A fork's dataset subclasses `DataConfig` in its own file: `name: Literal["mine"] = "mine"` plus
its keys, each saying its role where it is declared (foundation/section.py: a path the data may
move from is `RUNTIME`; anything that changes the samples is computation, the default).
"""

from __future__ import annotations

from pydantic import Field

from data.augment import AugmentConfig
from data.mix import MixConfig
from foundation.section import RUNTIME, Section


class DataConfig(Section):
    name: str = Field("synthetic", description="registered dataset")
    subset: int | None = Field(
        None,
        ge=1,
        description="train on N samples drawn once with the seed, spread over the whole set "
        "(stratified by class where the labels are known without reading images; null = all)",
    )
    batch_size: int = Field(
        128, ge=1, description="per process (ignored when data.global_batch_size is set)"
    )
    global_batch_size: int | None = Field(
        None,
        ge=1,
        description="samples per step over all processes, whatever their number W (each takes "
        "B / W, a multiple of W); the epoch is padded to whole global batches. A checkpoint "
        "then continues on another W (not bit for bit, except in the invariant mode)",
    )
    num_workers: int = Field(
        0,
        ge=0,
        description="DataLoader workers per process (results do not depend on it)",
        json_schema_extra=RUNTIME,
    )
    persistent_workers: bool = Field(
        False,
        description="keep workers across epochs (results do not depend on it)",
        json_schema_extra=RUNTIME,
    )
    image_size: int = Field(32, ge=8, description="the size the pipelines make every image")
    augment: AugmentConfig = Field(
        AugmentConfig(), description="the train and eval pipelines (see data/augment.py)"
    )
    mix: MixConfig = Field(
        MixConfig(), description="MixUp / CutMix of training batches (see data/mix.py)"
    )
