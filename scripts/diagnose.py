"""Check the seed streams of a live job against the plan: `python -m scripts.diagnose`.

Run it alone or under torchrun (`make diagnose NPROC=2`, or across nodes). Every rank seeds each
stream exactly as the trainer does and draws a few numbers; rank 0 gathers them and prints, per
stream, whether the ranks agree, next to what the plan expects (identical or distinct across
data-parallel ranks). Exit code 1 on any mismatch.

With a config (`make diagnose CONFIG=... ARGS=... NPROC=2`, train.py's flags), it also builds
the job's own dataset and model on every rank and checks what the plan promises of them: the
ranks' first batches are disjoint shards, a sample's augmentation is the same on every rank, the
initial weights are the same on every rank, and the forward pass's randomness (dropout) is not.

With `parallel.tensor` > 1 (`make diagnose NPROC=4 CONFIG=configs/vit_tiny.yaml
ARGS="parallel.tensor=2"`) it checks the dp x tp mesh instead: each stream per (dp, tp)
coordinate against the rule (identical inside a tp group except the sharded-region stream), the
split model's initial weights and forward pass against the unsplit model's, and a few training
steps with a hook on every dropout site (tools/tensor_parallel_check.py).

`--plant-mistake` reproduces a classic bug so you can see what a failure looks like:
`local-rank` seeds from LOCAL_RANK (GPU 0 of every node gets the same streams; visible with two or
more nodes), `shared-dropout` seeds dropout without the rank; with tensor parallelism,
`all-identical` applies seed document 000's rule to the sharded regions too (every shard drops
the same pattern) and `per-rank-dropout` seeds the replicated dropout per rank (the replicas of
the residual stream drift apart).
"""

from __future__ import annotations

import argparse
import random
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from configs import Config, load_config, parse_args
from data.loaders import build_data
from data.mix import BatchMix, MixConfig
from data.subset import seeded_subset
from foundation.errors import UserError
from foundation.exit import run_reporting_user_errors
from foundation.process import process_launch
from models import build_model
from runtime.process_group import join_process_group, leave_process_group
from seeding import SampleKey
from seeding.global_streams import enter_dropout_stream, enter_init_stream, seed_host_globals
from seeding.hashseed import hash_seed_warning
from seeding.per_sample import SampleRandomness
from seeding.plan import STREAM_AXES, SeedPlan, data_parallel
from seeding.regions import sharded_randomness
from seeding.sampler import SeededDistributedSampler
from seeding.workers import seed_worker_globals
from tools.tensor_parallel_check import check_this_rank, gather_reports, verdicts

DRAWS = 3
MISTAKES = ("local-rank", "shared-dropout", "all-identical", "per-rank-dropout")
# The tensor-parallel mistakes, planted in the plan's own table (the check keeps its own rule).
PLANTED_AXES = {
    "all-identical": ("sharded_dropout", ("dp",)),
    "per-rank-dropout": ("dropout", ("dp", "tp")),
}


def _first_draws(plan: SeedPlan, world_size: int, mistake: str | None) -> dict[str, list[float]]:
    """Each stream's first draws in this process, seeded the way the trainer seeds it."""
    draws: dict[str, list[float]] = {}
    enter_init_stream(plan)
    draws["init"] = torch.rand(DRAWS).tolist()
    if mistake == "shared-dropout":
        torch.manual_seed(plan.seed("init"))
    else:
        enter_dropout_stream(plan)
    draws["dropout"] = torch.rand(DRAWS).tolist()
    with sharded_randomness():
        draws["sharded_dropout"] = torch.rand(DRAWS).tolist()
    seed_host_globals(plan)
    draws["host"] = [random.random() for _ in range(DRAWS)] + np.random.random(DRAWS).tolist()
    seed_worker_globals(plan, worker_id=0, epoch=0)
    draws["worker"] = [random.random(), float(np.random.random()), float(torch.rand(()))]
    loader = torch.Generator()
    loader.manual_seed(plan.seed("loader", 0))
    draws["loader"] = torch.rand(DRAWS, generator=loader).tolist()
    sampler = SeededDistributedSampler(range(1000), plan, num_replicas=world_size, rank=0)
    sampler.set_epoch(0)
    draws["sampler"] = [float(index) for index in sampler.permutation()[:DRAWS]]
    augment = SampleRandomness(plan.augment_key())
    augment.reseed(epoch=0, index=7)
    draws["augment"] = augment.numpy.random(DRAWS).tolist()
    torch.manual_seed(plan.seed("microbatch", 0, 0))  # world-size-invariant mode's dropout
    draws["microbatch"] = torch.rand(DRAWS).tolist()
    subset = seeded_subset(range(1000), DRAWS, plan.seed("subset"))[0]  # data.subset's draw
    draws["subset"] = [float(index) for index in subset.indices]
    mix = BatchMix(MixConfig(mixup_alpha=1.0), plan, num_classes=10)  # MixUp/CutMix's lambda
    draws["mix"] = [mix.draw(step=0, slot=slot).lam for slot in range(DRAWS)]
    return draws


# What the plan promises of the job's own data and model, row by row (a job has no stream
# table entry for these: they are products of several streams).
JOB_ROWS = {
    "batch": "distinct",  # the first batch of epoch 0: each rank its own shard
    "sample": "identical",  # sample 0's augmentation at epoch 0, on every rank
    "weights": "identical",  # the initial weights
    "forward": "distinct",  # a forward pass in training mode (dropout)
}


def _job_draws(
    config: Config, plan: SeedPlan, world_size: int, rank: int
) -> dict[str, list[float]]:
    """The job's own dataset and model, built as train.py builds them, as a few numbers."""
    data = build_data(config.data, plan, world_size, rank, pin_memory=False)
    batch = data.train.sampler.indices(0)[: data.train.batch_size]
    sample = data.train.dataset[SampleKey(0, 0)][0]
    enter_init_stream(plan)
    model = build_model(config.model, data.num_classes, data.image_size)
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    enter_dropout_stream(plan)
    model.train()
    with torch.no_grad():
        forward = model(torch.stack([sample, sample])).reshape(-1)
    return {
        "batch": [float(index) for index in batch[:DRAWS]] + [float(sum(batch))],
        "sample": [*sample.reshape(-1)[:DRAWS].tolist(), float(sample.double().sum())],
        "weights": [*weights[:DRAWS].tolist(), float(weights.double().sum())],
        "forward": [*forward[:DRAWS].tolist(), float(forward.double().sum())],
    }


def _within_rank_checks(plan: SeedPlan) -> list[tuple[str, bool]]:
    """Distinctness that one process can check alone: across workers, epochs and samples."""
    seeds = {plan.seed("worker", worker, epoch) for worker in range(4) for epoch in range(4)}
    micro = {plan.seed("microbatch", step, j) for step in range(4) for j in range(8)}
    mixes = {plan.seed("mix", step, slot) for step in range(4) for slot in range(8)}
    augment = SampleRandomness(plan.augment_key())
    firsts = set()
    for epoch in range(3):
        for index in range(50):
            augment.reseed(epoch, index)
            firsts.add(float(augment.numpy.random()))
    sampler = SeededDistributedSampler(range(1000), plan, num_replicas=1, rank=0)
    orders = set()
    for epoch in range(4):
        sampler.set_epoch(epoch)
        orders.add(tuple(sampler.permutation()[:20]))
    return [
        ("worker streams distinct across 4 workers x 4 epochs", len(seeds) == 16),
        ("micro-batch streams distinct across 4 steps x 8 micro-batches", len(micro) == 32),
        ("mix streams distinct across 4 steps x 8 slots", len(mixes) == 32),
        ("augment streams distinct across 3 epochs x 50 samples", len(firsts) == 150),
        ("sampler order new in each of 4 epochs", len(orders) == 4),
    ]


def _format(values: list[float]) -> str:
    return " ".join(f"{value:.4f}" if value < 1 else f"{value:.0f}" for value in values[:DRAWS])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.diagnose", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--plant-mistake", choices=MISTAKES, default=None)
    arguments, train_flags = parser.parse_known_args(argv)
    flags = parse_args(train_flags)
    config = load_config(flags.config, flags.profile, flags.seed, flags.overrides)
    arguments.seed = config.seed

    launch = process_launch()
    world_size, rank = launch.world_size, launch.rank
    mistake, tensor_parallel = arguments.plant_mistake, config.parallel.tensor > 1
    if mistake is not None and (mistake in PLANTED_AXES) != tensor_parallel:
        needs = "parallel.tensor > 1" if mistake in PLANTED_AXES else "parallel.tensor=1"
        raise UserError(f"--plant-mistake {mistake} is a mistake of runs with {needs}")
    if tensor_parallel:
        return _diagnose_tensor_parallel(config, mistake)
    seeding_rank = launch.local_rank if arguments.plant_mistake == "local-rank" else rank
    plan = data_parallel(arguments.seed, seeding_rank, config.seed_streams.bases())
    if world_size > 1:
        dist.init_process_group("gloo", timeout=timedelta(minutes=5))
    mine = _first_draws(plan, world_size, arguments.plant_mistake)
    mine.update(_job_draws(config, plan, world_size, rank))
    gathered: list[dict[str, list[float]]] = [mine]
    if world_size > 1:
        gathered = [{} for _ in range(world_size)]
        dist.all_gather_object(gathered, mine)
    failures = 0
    if rank == 0:
        failures = _report(gathered, plan, arguments)
    if world_size > 1:
        verdict = torch.tensor([failures])
        dist.broadcast(verdict, src=0)
        failures = int(verdict)
        leave_process_group(torch.device("cpu"))
    return 1 if failures else 0


def _diagnose_tensor_parallel(config: Config, mistake: str | None) -> int:
    """The dp x tp mesh's rules, checked on the job's own model (tools/tensor_parallel_check.py)."""
    launch = process_launch()
    if mistake in PLANTED_AXES:
        stream, axes = PLANTED_AXES[mistake]
        STREAM_AXES[stream] = axes
    group = join_process_group(config.trainer.device, config.distributed.collective_timeout_s)
    topology = group.topology
    reports = gather_reports(check_this_rank(config, topology), topology.world_size)
    failures = 0
    if launch.rank == 0:
        degree = config.parallel.tensor
        print(
            f"tensor-parallel check: base seed {config.seed}, {topology.world_size} ranks = "
            f"dp {topology.world_size // degree} x tp {degree}"
            + (f", planted mistake: {mistake}" if mistake else "")
        )
        print(
            f"{'stream':<16}"
            + "".join(f"{'(dp {}, tp {})'.format(*r.coordinates):<17}" for r in reports)
        )
        for stream in STREAM_AXES:
            cells = "".join(f"{r.streams[stream][-12:]:<17}" for r in reports)
            print(f"{stream:<16}{cells}")
        for description, ok in verdicts(reports):
            failures += not ok
            print(f"{'ok' if ok else 'MISMATCH'}: {description}")
        print(
            "verdict: every rule of the mesh holds"
            if not failures
            else f"verdict: {failures} mismatch(es)"
        )
    verdict = torch.tensor([failures])
    if topology.distributed:
        dist.broadcast(verdict, src=0)
    group.leave()
    return 1 if int(verdict) else 0


def _report(
    gathered: list[dict[str, list[float]]], plan: SeedPlan, arguments: argparse.Namespace
) -> int:
    world_size = len(gathered)
    print(
        f"seed plan check: base seed {arguments.seed}, {world_size} rank(s), strategy data_parallel"
    )
    header = f"{'stream':<11}" + "".join(f"{'rank ' + str(r):<24}" for r in range(world_size))
    print(header + f"{'expected':<11}{'observed':<11}verdict")
    failures = 0
    expectations = {s: "distinct" if "dp" in a else "identical" for s, a in STREAM_AXES.items()}
    for stream, expected in {**expectations, **JOB_ROWS}.items():
        rows = [tuple(ranks[stream]) for ranks in gathered]
        if world_size == 1:
            observed, ok = "-", True
        else:
            observed = (
                "identical"
                if len(set(rows)) == 1
                else ("distinct" if len(set(rows)) == world_size else "mixed")
            )
            ok = observed == expected
        failures += not ok
        cells = "".join(f"{_format(ranks[stream]):<24}" for ranks in gathered)
        print(f"{stream:<11}{cells}{expected:<11}{observed:<11}{'ok' if ok else 'MISMATCH'}")
    for description, ok in _within_rank_checks(plan):
        failures += not ok
        print(f"{'ok' if ok else 'MISMATCH'}: {description}")
    warning = hash_seed_warning()
    if warning:
        print(f"warning: {warning}")
    print(
        "verdict: every stream matches the plan"
        if not failures
        else f"verdict: {failures} mismatch(es)"
    )
    return failures


if __name__ == "__main__":
    run_reporting_user_errors(main)
