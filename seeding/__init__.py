"""One seed plan for every RNG, rank, DataLoader worker, epoch and sample.

The bottom layer: it imports nothing else of the template (import-linter checks it); the
trainer and the data loaders wire these pieces together. `python -m scripts.diagnose` checks the
streams of a live (torchrun) job against the plan.

- `derive`: counter-based derivation of every seed from the base seed (no `seed + rank`).
- `plan`: which stream is shared or distinct along which parallel axis (data/model/tensor/hybrid).
- `per_sample`: augmentation randomness as a pure function of (base, epoch, sample index).
- `sampler`: DistributedSampler semantics with a collision-free permutation seed and a start offset.
- `workers`: worker_init_fn seeding python/numpy/torch per (rank, worker, epoch).
- `global_streams`: the global RNGs of the training process (init, dropout, host streams).
- `regions`: `sharded_randomness()`, the stream of tensor-parallel sharded dropout sites.
- `state`: RNG state capture/restore as weights_only-loadable values.
- `hashseed`: checks the interpreter's PYTHONHASHSEED.
"""

from seeding.derive import SEED_LIMIT, check_base_seed, derive_key, derive_seed
from seeding.global_streams import enter_dropout_stream, enter_init_stream, seed_host_globals
from seeding.per_sample import EVAL_LANE, TRAIN_LANE, SampleKey, SampleRandomness, bind_transform
from seeding.plan import (
    SOURCES,
    STREAM_AXES,
    MeshCoordinates,
    SeedPlan,
    data_parallel,
    hybrid,
    model_parallel,
    stream_bases,
    tensor_parallel,
)
from seeding.regions import enter_sharded_stream, sharded_randomness
from seeding.sampler import SeededDistributedSampler
from seeding.state import capture_rng_state, restore_rng_state
from seeding.workers import WorkerSeeder, seed_worker_globals

__all__ = [
    "EVAL_LANE",
    "SEED_LIMIT",
    "SOURCES",
    "STREAM_AXES",
    "TRAIN_LANE",
    "MeshCoordinates",
    "SampleKey",
    "SampleRandomness",
    "SeedPlan",
    "SeededDistributedSampler",
    "WorkerSeeder",
    "bind_transform",
    "capture_rng_state",
    "check_base_seed",
    "data_parallel",
    "derive_key",
    "derive_seed",
    "enter_dropout_stream",
    "enter_init_stream",
    "enter_sharded_stream",
    "hybrid",
    "model_parallel",
    "restore_rng_state",
    "seed_host_globals",
    "seed_worker_globals",
    "sharded_randomness",
    "stream_bases",
    "tensor_parallel",
]
