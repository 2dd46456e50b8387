"""The root config, assembled from the sections that live beside the code reading them.

| key            | section            | declared in           |
|----------------|--------------------|-----------------------|
| `trainer`      | TrainerConfig      | engine/trainer.py     |
| `optim`        | OptimConfig        | engine/optim.py       |
| `determinism`  | DeterminismConfig  | engine/determinism.py |
| `data`         | DataConfig         | data/config.py        |
| `model`        | ModelConfig        | models/config.py      |
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from data.config import DataConfig
from engine.determinism import DeterminismConfig, check_profile
from engine.optim import OptimConfig
from engine.section import Section
from engine.trainer import TrainerConfig
from models.config import ModelConfig
from seeding.derive import SEED_LIMIT


class Config(Section):
    name: str = "default"
    seed: int = Field(42, ge=0, lt=SEED_LIMIT)
    profile: Literal["debug", "eval", "production"] = "debug"
    trainer: TrainerConfig = TrainerConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    determinism: DeterminismConfig = DeterminismConfig()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or value.startswith("."):
            raise ValueError("must be a plain directory name")
        return value

    @model_validator(mode="after")
    def _profile_is_consistent(self) -> Config:
        check_profile(self.profile, self.determinism)
        return self
