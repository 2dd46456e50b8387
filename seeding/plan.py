"""The seed plan: which seed every named stream gets on every rank, for every parallel strategy.

One table says which mesh axes each stream varies along; every strategy is only a mapping from a
process's position to (dp, tp, pp) coordinates. Two ranks share a stream exactly when their
coordinates agree on that stream's axes, so "identical where it must be, distinct where it must be"
is a property of the table, not of scattered `seed + rank` arithmetic.

| stream  | varies along | why                                                                 |
|---------|--------------|---------------------------------------------------------------------|
| init    | pp           | replicas and tensor shards start from the same weights; each        |
|         |              | pipeline stage initialises its own layers                           |
| dropout | dp           | torch stream of the forward pass: one per data-parallel replica,    |
|         |              | shared inside a model/tensor-parallel group. Under tensor           |
|         |              | parallelism this is the *replicated* region's stream (the residual  |
|         |              | stream after a row-parallel all-reduce): every tp rank must draw    |
|         |              | the same mask there, or the replicas silently diverge               |
| sharded | dp, tp       | dropout inside a *sharded* region (`sharded_randomness()`): the     |
| _dropout|              | attention probabilities of this rank's heads, the column-parallel   |
|         |              | MLP slice. Each tp rank holds other activations, so each draws its  |
|         |              | own mask (Megatron's model-parallel RNG); seed document 000's "all  |
|         |              | identical inside the group" rule would repeat one mask per shard    |
| host    | dp           | python/numpy in the training process: per data-parallel replica     |
| worker  | dp (+worker, | python/numpy/torch inside DataLoader workers: per replica, worker   |
|         |   epoch)     | and epoch                                                           |
| loader  | dp           | private generator of the DataLoader (never the global torch RNG)    |
| sampler | (+epoch)     | shuffle order: the same permutation on every rank, new each epoch   |
| augment | (+epoch,     | per-sample augmentation: a pure function of (base, epoch, index)    |
|         |   index)     |                                                                     |
| micro-  | (+step,      | world-size-invariant mode: forward-pass randomness (dropout) of     |
|  batch  |  micro_batch)| micro-batch j of step k, the same on whichever rank computes it     |
| subset  |              | which samples `data.subset` keeps: one draw, the same on every rank |
| mix     | (+step, slot)| MixUp/CutMix of one micro-batch (data.mix): its lambda and box, the |
|         |              | same after a resume; in the invariant mode, for any W               |

The trainer uses `data_parallel(rank)` with the *global* rank: seeding from LOCAL_RANK would give
GPU 0 of every node the same streams.

Sources (`SOURCES`): the names a user varies one at a time (`seed_streams.<source>`, `make
benchmark VARY=...`), each covering the streams that carry that kind of randomness. A source's
seed replaces the base seed for its streams only; every other stream keeps the base, so runs that
differ in one source differ in that randomness alone (Bouthillier et al., 2021).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from seeding.derive import check_base_seed, derive_key, derive_seed

STREAM_AXES: dict[str, tuple[str, ...]] = {
    "init": ("pp",),
    "dropout": ("dp",),
    "sharded_dropout": ("dp", "tp"),
    "host": ("dp",),
    "worker": ("dp",),
    "loader": ("dp",),
    "sampler": (),
    "augment": (),
    "microbatch": (),
    "subset": (),
    "mix": (),
}

# Coordinates a stream takes at the point of use, beyond the mesh axes (for the manifest).
STREAM_EXTRA_COORDINATES: dict[str, tuple[str, ...]] = {
    "worker": ("worker_id", "epoch"),
    "sampler": ("epoch",),
    "augment": ("epoch", "index"),
    "microbatch": ("step", "micro_batch"),
    "mix": ("step", "slot"),
}


# Every stream belongs to exactly one source (a unit test checks it).
SOURCES: dict[str, tuple[str, ...]] = {
    "init": ("init",),  # the initial weights
    "order": ("sampler",),  # the data order, every epoch's permutation
    "augment": ("augment", "worker"),  # every sample's augmentation, globals inside workers
    "dropout": ("dropout", "sharded_dropout", "microbatch"),  # forward-pass randomness
    "mix": ("mix",),  # MixUp/CutMix draws
    "subset": ("subset",),  # which samples data.subset keeps
    "host": ("host", "loader"),  # python/numpy in the training process, the loader's generator
}


def stream_bases(sources: Mapping[str, int | None]) -> dict[str, int]:
    """{stream: base seed} for the sources given a seed of their own (None: the base)."""
    return {
        stream: check_base_seed(seed)
        for source, seed in sources.items()
        if seed is not None
        for stream in SOURCES[source]
    }


@dataclass(frozen=True)
class MeshCoordinates:
    """A process's position in a (data, tensor, pipeline)-parallel mesh."""

    dp: int = 0
    tp: int = 0
    pp: int = 0

    def along(self, axes: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(getattr(self, axis) for axis in axes)


@dataclass(frozen=True)
class SeedPlan:
    """All seeds of one process. Pure: the same inputs give the same plan on any machine."""

    base: int
    strategy: str
    coordinates: MeshCoordinates
    # (stream, base) pairs that replace `base` for those streams (seed_streams); sorted
    bases: tuple[tuple[str, int], ...] = ()

    def base_of(self, stream: str) -> int:
        return dict(self.bases).get(stream, self.base)

    def seed(self, stream: str, *extra: int) -> int:
        """The 64-bit seed of `stream` for this process, at the given extra coordinates."""
        axes = STREAM_AXES[stream]
        return derive_seed(self.base_of(stream), stream, *self.coordinates.along(axes), *extra)

    def augment_key(self) -> tuple[int, int]:
        """The 128-bit Philox key of per-sample augmentation (identical on every rank)."""
        axes = STREAM_AXES["augment"]
        return derive_key(self.base_of("augment"), "augment", *self.coordinates.along(axes))

    def describe(self) -> dict[str, Any]:
        """The plan as plain values, for manifest.json (`seeds.ranks[r].streams`)."""
        streams: dict[str, Any] = {}
        for stream, axes in STREAM_AXES.items():
            entry: dict[str, Any] = {
                "keyed_by": dict(zip(axes, self.coordinates.along(axes), strict=True)),
                "varies_with": list(STREAM_EXTRA_COORDINATES.get(stream, ())),
            }
            if stream == "augment":
                entry["philox_key"] = list(self.augment_key())
            elif stream in STREAM_EXTRA_COORDINATES:
                entry["seed_at_zero"] = self.seed(stream, *[0] * len(entry["varies_with"]))
            else:
                entry["seed"] = self.seed(stream)
            streams[stream] = entry
        described = {
            "strategy": self.strategy,
            "coordinates": vars(self.coordinates),
            "streams": streams,
        }
        if self.bases:
            described["stream_bases"] = dict(self.bases)
        return described


def hybrid(base: int, dp: int, tp: int, pp: int) -> SeedPlan:
    return SeedPlan(check_base_seed(base), "hybrid", MeshCoordinates(dp=dp, tp=tp, pp=pp))


def _own_bases(bases: Mapping[str, int] | None) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((bases or {}).items()))


def data_parallel(base: int, rank: int, bases: Mapping[str, int] | None = None) -> SeedPlan:
    """Every process is a replica: dropout, host and worker streams per global rank. `bases`
    ({stream: seed}, `stream_bases`) gives some streams a base seed of their own."""
    return SeedPlan(
        check_base_seed(base), "data_parallel", MeshCoordinates(dp=rank), _own_bases(bases)
    )


def model_parallel(base: int, dp_rank: int, mp_rank: int) -> SeedPlan:
    """The model is split into stages: torch streams shared inside the model-parallel group."""
    return SeedPlan(
        check_base_seed(base), "model_parallel", MeshCoordinates(dp=dp_rank, pp=mp_rank)
    )


def tensor_parallel(
    base: int, dp_rank: int, tp_rank: int, bases: Mapping[str, int] | None = None
) -> SeedPlan:
    """Layers are split across the ranks of a tensor-parallel group: every stream is identical
    inside the group (the same batch, the same replicated dropout) except `sharded_dropout`,
    which each shard draws for itself."""
    return SeedPlan(
        check_base_seed(base),
        "tensor_parallel",
        MeshCoordinates(dp=dp_rank, tp=tp_rank),
        _own_bases(bases),
    )
