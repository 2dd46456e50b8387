"""The root config, assembled from the sections that live beside the code reading them.

| key            | section                                | declared in                      |
|----------------|----------------------------------------|----------------------------------|
| `trainer`      | TrainerConfig                          | training/trainer.py              |
| `optim`        | OptimConfig                            | training/optim.py                |
| `determinism`  | DeterminismConfig                      | training/determinism.py          |
| `checkpoint`   | CheckpointConfig                       | runtime/checkpoint/owner.py           |
| `distributed`  | DistributedConfig                      | runtime/process_group.py         |
| `parallel`     | ParallelConfig                         | training/parallel/config.py      |
| `seed_streams` | SeedStreamsConfig                      | here (the sources: seeding/plan.py) |
| `data`         | the chosen dataset's DataConfig        | data/config.py + data/<name>.py  |
| `model`        | the chosen model's ModelConfig         | models/config.py + models/<name>.py |

`data` and `model` are the registered section of the dataset and model a config names
(`schema_for`): a key the chosen one does not read is unknown, like a typo. A key that moved to
another section is refused with its new name (`MOVED_KEYS`).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import Field, SerializeAsAny, create_model, field_validator, model_validator

from data import DATASETS
from data.config import DataConfig
from data.synthetic import SyntheticDataConfig
from foundation.section import RUNTIME, Section
from models import MODELS
from models.config import ModelConfig
from models.smallcnn import SmallCNNConfig
from runtime.checkpoint.owner import CheckpointConfig
from runtime.process_group import DistributedConfig
from seeding import SOURCES, stream_bases
from seeding.derive import SEED_LIMIT
from training.determinism import DeterminismConfig, check_profile
from training.optim import OptimConfig
from training.parallel.config import ParallelConfig
from training.trainer import TrainerConfig

# Keys that moved to the section of their owner: an old config or command line is told the new
# name in one line instead of "unknown key".
MOVED_KEYS = {
    "trainer.checkpoint_every_steps": "checkpoint.every_steps",
    "trainer.keep_checkpoints": "checkpoint.keep",
    "trainer.collective_timeout_s": "distributed.collective_timeout_s",
}

DEFAULT_DATASET = "synthetic"
DEFAULT_MODEL = "smallcnn"


def _source_seed(source: str) -> Any:
    streams = ", ".join(SOURCES[source])
    return Field(
        None,
        ge=0,
        lt=SEED_LIMIT,
        description=f"a seed for this source alone ({streams}); null = `seed`",
    )


class SeedStreamsConfig(Section):
    """`seed_streams`: one source of randomness seeded apart from the rest (`make benchmark
    VARY=...` varies them one at a time). Unset, a source follows `seed`: the run is bit for
    bit the one without this section."""

    init: int | None = _source_seed("init")
    order: int | None = _source_seed("order")
    augment: int | None = _source_seed("augment")
    dropout: int | None = _source_seed("dropout")
    mix: int | None = _source_seed("mix")
    subset: int | None = _source_seed("subset")
    host: int | None = _source_seed("host")

    def bases(self) -> dict[str, int]:
        """{stream: seed} for the plan (seeding.plan.stream_bases)."""
        return stream_bases(self.model_dump())


class Config(Section):
    name: str = Field(
        "default",
        description="the run folder's name (default: the config file's name)",
        json_schema_extra=RUNTIME,
    )
    seed: int = Field(
        42, ge=0, lt=SEED_LIMIT, description="base seed of the run, 0 <= seed < 2**64"
    )
    init_from: str | None = Field(
        None,
        description="a checkpoint whose model weights a new run starts from (fine-tuning); the "
        "optimizer and the schedule start fresh (train.py --init-from, make train INIT_FROM=)",
    )
    profile: Literal["debug", "eval", "production"] = Field(
        "debug", description='determinism profile (docs/configuration.md "Profiles")'
    )
    trainer: TrainerConfig = TrainerConfig()
    data: SerializeAsAny[DataConfig] = SyntheticDataConfig()
    model: SerializeAsAny[ModelConfig] = SmallCNNConfig()
    optim: OptimConfig = OptimConfig()
    determinism: DeterminismConfig = DeterminismConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    distributed: DistributedConfig = DistributedConfig()
    parallel: ParallelConfig = ParallelConfig()
    seed_streams: SeedStreamsConfig = SeedStreamsConfig()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or value.startswith(".") or not value.isprintable():
            raise ValueError("must be a plain directory name")
        # Room for "-<profile>-seed<N>-step<N>-<W>proc.json" in a file name's 255 bytes.
        if len(value.encode()) > 100:
            raise ValueError("must be a plain directory name of at most 100 bytes")
        return value

    @model_validator(mode="after")
    def _profile_is_consistent(self) -> Config:
        check_profile(self.profile, self.determinism)
        return self

    @model_validator(mode="after")
    def _tensor_parallelism_is_possible(self) -> Config:
        """The model can be split that many ways, and nothing that is not built for shards yet
        is asked for with it (docs/tensor-parallel.md, "Not yet")."""
        degree = self.parallel.tensor
        if self.parallel.shard:
            self._refuse_with("parallel.shard=true", self.parallel.tensor > 1)
        if degree == 1:
            return self
        self.model.check_tensor_parallel(degree)
        self._refuse_with(f"parallel.tensor={degree}")
        return self

    def _refuse_with(self, split: str, with_tensor: bool = False) -> None:
        unsupported = {
            "trainer.world_size_invariant=true": self.trainer.world_size_invariant
            and not split.startswith("parallel.shard"),
            "trainer.ema.enabled=true": self.trainer.ema.enabled,
            "parallel.tensor > 1": with_tensor,
        }
        for setting, asked in unsupported.items():
            if asked:
                raise ValueError(f"{split} does not work with {setting} yet")

    @model_validator(mode="after")
    def _invariant_mode_is_complete(self) -> Config:
        """The world-size-invariant mode needs B and b, with b dividing B, and exact numerics."""
        trainer, data = self.trainer, self.data
        if not trainer.world_size_invariant:
            if trainer.micro_batch_size is not None:
                raise ValueError(
                    "trainer.micro_batch_size is used only with trainer.world_size_invariant=true"
                )
            return self
        if data.global_batch_size is None or trainer.micro_batch_size is None:
            raise ValueError(
                "trainer.world_size_invariant=true needs data.global_batch_size and "
                "trainer.micro_batch_size"
            )
        if data.global_batch_size % trainer.micro_batch_size:
            raise ValueError(
                f"data.global_batch_size={data.global_batch_size} is not a multiple of "
                f"trainer.micro_batch_size={trainer.micro_batch_size}"
            )
        if self.profile == "production":
            raise ValueError(
                "trainer.world_size_invariant=true needs the debug or eval profile: production's "
                "cudnn.benchmark, TF32 and AMP change the numerics from run to run"
            )
        return self


@cache
def schema_for(dataset: str, model: str) -> type[Config]:
    """The root config with the sections of this dataset and this model (registered names)."""
    data_section, model_section = DATASETS.config(dataset), MODELS.config(model)
    return create_model(  # type: ignore[call-overload, no-any-return]
        "Config",
        __base__=Config,
        data=(data_section, data_section()),
        model=(model_section, model_section()),
    )
