"""Derivation without collisions, and the strategy table over a simulated dp x tp x pp mesh."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from seeding import (
    SOURCES,
    STREAM_AXES,
    SampleRandomness,
    data_parallel,
    hybrid,
    model_parallel,
    stream_bases,
    tensor_parallel,
)
from seeding.derive import derive_seed, numpy_legacy_seed
from seeding.plan import SeedPlan


def test_no_collisions_over_ranks_workers_epochs_samples() -> None:
    seeds = [
        derive_seed(42, "worker", rank, worker, epoch)
        for rank, worker, epoch in itertools.product(range(16), range(8), range(10))
    ]
    assert len(set(seeds)) == len(seeds) == 1280


def test_no_seed_plus_rank_aliasing() -> None:
    # The classic bug: base 0 / rank 3 == base 3 / rank 0 with arithmetic seeds.
    assert data_parallel(0, 3).seed("dropout") != data_parallel(3, 0).seed("dropout")
    # ... and torch's DistributedSampler: seed 0 / epoch 3 == seed 3 / epoch 0.
    assert data_parallel(0, 0).seed("sampler", 3) != data_parallel(3, 0).seed("sampler", 0)


def test_streams_are_distinct_from_each_other() -> None:
    plan = data_parallel(42, 0)
    values = {plan.seed(stream) for stream in ("init", "dropout", "host", "loader")}
    assert len(values) == 4


@pytest.mark.parametrize("base", [0, 1, 2**32, 2**63, 2**64 - 1])
def test_any_base_seed_in_range_works_with_every_rng(base: int) -> None:
    seed = data_parallel(base, 1).seed("dropout")
    assert 0 <= seed < 2**64
    torch.manual_seed(seed)
    np.random.seed(numpy_legacy_seed(seed))
    SampleRandomness(data_parallel(base, 0).augment_key()).reseed(3, 5)


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, "3", True])
def test_bad_base_seed_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        data_parallel(bad, 0)  # type: ignore[arg-type]


def test_python_and_numpy_globals_get_different_streams_from_one_seed() -> None:
    import random

    seed = derive_seed(42, "host", 0)
    random.seed(seed)
    np.random.seed(numpy_legacy_seed(seed))
    assert random.random() != np.random.random()


def test_augment_streams_do_not_overlap_between_neighbouring_samples() -> None:
    randomness = SampleRandomness(data_parallel(5, 0).augment_key())
    blocks = {}
    for epoch, index in itertools.product(range(3), range(40)):
        randomness.reseed(epoch, index)
        blocks[(epoch, index)] = randomness.bit_generator.random_raw(64).tolist()
    words = [word for block in blocks.values() for word in block]
    assert len(set(words)) == len(words)


# What each strategy must share or separate, written out independently of STREAM_AXES:
# stream -> the mesh axes along which two ranks must get DIFFERENT streams.
EXPECTED_DISTINCT_ALONG = {
    "init": {"pp"},
    "dropout": {"dp"},  # the replicated regions: one mask for a tensor-parallel group
    "sharded_dropout": {"dp", "tp"},  # a sharded region: a mask per shard (not seed doc 000's rule)
    "host": {"dp"},
    "worker": {"dp"},
    "loader": {"dp"},
    "sampler": set(),
    "augment": set(),
    "microbatch": set(),  # keyed by (step, micro-batch), never by a rank: world-size invariance
    "subset": set(),  # one draw of data.subset, the same on every rank and world size
    "mix": set(),  # MixUp/CutMix keyed by (step, slot): the same draw whichever rank mixes
}


def stream_value(plan: SeedPlan, stream: str) -> object:
    if stream == "augment":
        return plan.augment_key()
    extra = {"worker": (0, 0), "sampler": (0,), "microbatch": (0, 0), "mix": (0, 0)}.get(stream, ())
    return plan.seed(stream, *extra)


def test_table_matches_the_expected_strategy_over_a_2x2x2_mesh() -> None:
    assert set(STREAM_AXES) == set(EXPECTED_DISTINCT_ALONG)
    mesh = list(itertools.product(range(2), range(2), range(2)))
    plans = {coords: hybrid(42, *coords) for coords in mesh}
    for stream, distinct_axes in EXPECTED_DISTINCT_ALONG.items():
        for a, b in itertools.combinations(mesh, 2):
            differing_axes = {
                axis for axis, x, y in zip(("dp", "tp", "pp"), a, b, strict=True) if x != y
            }
            should_differ = bool(differing_axes & distinct_axes)
            differs = stream_value(plans[a], stream) != stream_value(plans[b], stream)
            assert differs == should_differ, (stream, a, b)


def test_named_strategies_are_views_of_the_mesh() -> None:
    # data parallel: dropout per rank, init shared.
    ranks = [data_parallel(42, r) for r in range(4)]
    assert len({p.seed("dropout") for p in ranks}) == 4
    assert len({p.seed("init") for p in ranks}) == 1
    # model parallel: torch dropout stream shared inside the model-parallel group, python/numpy per dp.
    group = [model_parallel(42, dp_rank=1, mp_rank=m) for m in range(4)]
    assert len({p.seed("dropout") for p in group}) == 1
    assert len({p.seed("host") for p in group}) == 1
    assert model_parallel(42, 0, 0).seed("host") != model_parallel(42, 1, 0).seed("host")
    # tensor parallel: every stream identical inside a tensor-parallel group but the sharded
    # regions' one, which each shard draws for itself.
    shards = [tensor_parallel(42, dp_rank=0, tp_rank=t) for t in range(4)]
    for stream in STREAM_AXES:
        values = {str(stream_value(p, stream)) for p in shards}
        assert len(values) == (4 if stream == "sharded_dropout" else 1), stream


def test_describe_records_every_stream_for_the_manifest() -> None:
    description = data_parallel(42, 1).describe()
    assert description["coordinates"] == {"dp": 1, "tp": 0, "pp": 0}
    assert set(description["streams"]) >= {"init", "dropout", "sampler", "augment", "worker"}
    assert description["streams"]["dropout"]["seed"] == data_parallel(42, 1).seed("dropout")
    assert description["streams"]["worker"]["varies_with"] == ["worker_id", "epoch"]


def test_every_stream_belongs_to_exactly_one_source() -> None:
    covered = [stream for streams in SOURCES.values() for stream in streams]
    assert sorted(covered) == sorted(STREAM_AXES)


def test_a_source_seed_moves_its_streams_only_and_no_source_seed_moves_nothing() -> None:
    plain = data_parallel(42, rank=1)
    assert data_parallel(42, rank=1, bases=stream_bases({"init": None})) == plain
    own = data_parallel(42, rank=1, bases=stream_bases({"augment": 7}))
    extra = {"worker": (0, 0), "sampler": (0,), "microbatch": (0, 0), "mix": (0, 0)}
    for stream in STREAM_AXES:
        if stream == "augment":
            continue
        moved = own.seed(stream, *extra.get(stream, ())) != plain.seed(
            stream, *extra.get(stream, ())
        )
        assert moved == (stream in SOURCES["augment"]), stream
    assert own.augment_key() != plain.augment_key()
    # the source's seed is a base like `seed`: base 7 for augment is base 7's augment stream
    assert own.augment_key() == data_parallel(7, rank=1).augment_key()
    assert own.describe()["stream_bases"] == {"augment": 7, "worker": 7}
    assert "stream_bases" not in plain.describe()


def test_the_seed_streams_section_has_a_key_for_every_source() -> None:
    """A source added to SOURCES without its config key could never be seeded apart."""
    from configs.schema import SeedStreamsConfig

    assert set(SeedStreamsConfig.model_fields) == set(SOURCES)
