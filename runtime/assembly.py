"""How a run is put together, in the one order every guarantee depends on.

train.py builds its run here, and so does every command that must train exactly what train.py
trains in-process (`make gpu-check`): a copy of these steps drifts (seeding the host RNGs after
the data instead of before, skipping the mode's preparation) and then checks another trainer.

The order, and why:
1. `plan_run`: the seed plan from the *global* rank (never LOCAL_RANK: every node would repeat
   node 0's streams), the step strategy, the determinism switches and the mode's preparation,
   then the host RNGs (random, numpy, torch) from the plan: all before the first draw.
2. `build_run`: the data (its generators are private, so building it draws nothing global),
   the schedule checked against it (an accumulation or warmup the run cannot hold is refused
   before anything is written), the model inside the init stream every rank shares (identical
   initial weights without a broadcast), then the per-rank dropout stream; the caller's
   recorder and session are made once the data is known (they describe its pipelines), and the
   trainer last, with its objective (label smoothing, MixUp/CutMix from the `mix` stream).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

import seeding
from data.config import DataConfig
from data.loaders import DataBundle, build_data
from data.mix import BatchMix
from foundation.errors import UserError
from models import build_model
from models.config import ModelConfig
from runtime.checkpoint.contents import load_checkpoint, reading
from runtime.checkpoint.files import checkpoint_digest
from seeding import SeedPlan
from training.determinism import DeterminismConfig, Precision, apply_determinism, precision_for
from training.health import NonFiniteWatch
from training.objective import Objective
from training.optim import OptimConfig
from training.parallel import parallel_mode
from training.parallel.config import ParallelConfig
from training.parallel.protocol import ParallelMode
from training.topology import CollectiveGuard, Topology, unguarded
from training.trainer import Schedule, Trainer, TrainerConfig


class SeedStreams(Protocol):
    def bases(self) -> dict[str, int]: ...


class RunConfig(Protocol):
    """The sections of the root config (configs/schema.py) that a run is built from."""

    seed: int
    seed_streams: SeedStreams
    init_from: str | None
    trainer: TrainerConfig
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig
    determinism: DeterminismConfig
    parallel: ParallelConfig


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What is fixed before anything is built: streams, step strategy, numerics."""

    plan: SeedPlan
    mode: ParallelMode
    precision: Precision
    determinism_notes: list[str]


@dataclasses.dataclass(frozen=True)
class BuiltRun:
    data: DataBundle
    model: nn.Module
    trainer: Trainer


def plan_run(config: RunConfig, topology: Topology) -> RunPlan:
    """Step 1: fix every seed and determinism switch before any draw."""
    mode = parallel_mode(
        config.parallel,
        config.trainer,
        config.data.global_batch_size,
        topology,
        config.seed,
        config.seed_streams.bases(),
    )
    plan = mode.plan
    notes = apply_determinism(config.determinism, topology.device) + mode.notes()
    mode.prepare(topology.device)
    seeding.seed_host_globals(plan)
    return RunPlan(plan, mode, precision_for(config.determinism, topology.device), notes)


def build_run(
    config: RunConfig,
    topology: Topology,
    planned: RunPlan,
    *,
    watch: NonFiniteWatch | None = None,
    guard: CollectiveGuard = unguarded,
    resuming: bool = False,
) -> BuiltRun:
    """Step 2: data, model (init stream; `init_from`'s weights unless `resuming`, whose
    weights come from its checkpoint), dropout stream, trainer. What observes the trainer (the
    recorder, the session) is built after it and attached (`Trainer.observe`): building it draws
    nothing from any stream."""
    plan, precision = planned.plan, planned.precision
    replicas, replica = planned.mode.data_replicas(topology)
    data = build_data(
        config.data,
        plan,
        replicas,
        replica,
        precision.pin_memory,
        planned.mode.eval_chunk,
    )
    Schedule.of(config.trainer, config.optim, data.train.batches_per_epoch())
    if topology.device.type == "cuda":
        # The CUDA generators exist before the streams are seeded: the sharded region
        # (seeding/regions.py) keeps a CUDA state only if CUDA has started.
        torch.cuda.init()
    seeding.enter_init_stream(plan)
    model = build_model(config.model, data.num_classes, data.image_size)
    if config.init_from is not None and not resuming:
        load_initial_weights(model, config.init_from)
    seeding.enter_dropout_stream(plan)
    mix = config.data.mix
    objective = Objective(
        config.optim.label_smoothing,
        BatchMix(mix, plan, data.num_classes) if mix.enabled else None,
    )
    trainer = Trainer(
        config.trainer,
        model,
        optim=config.optim,
        objective=objective,
        precision=precision,
        topology=topology,
        mode=planned.mode,
        train_loader=data.train,
        val_loader=data.val,
        watch=watch,
        guard=guard,
    )
    return BuiltRun(data, model, trainer)


def load_initial_weights(model: nn.Module, path: str) -> None:
    """`init_from`: the model's weights (parameters and buffers) from a checkpoint of this
    template, loaded safely; one line naming what does not fit. The model is still built from
    the init stream first, so every later stream is where it would be without `init_from`."""
    weights = load_checkpoint(Path(path))["model"]
    mine = model.state_dict()
    missing = sorted(set(mine) - set(weights))
    unexpected = sorted(set(weights) - set(mine))
    resized = sorted(k for k in set(mine) & set(weights) if mine[k].shape != weights[k].shape)
    if missing or unexpected or resized:
        problems = [
            f"{label} {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("other shape", resized),
            )
            if keys
        ]
        raise UserError(
            f"init_from {path}: its weights do not fit this model ({'; '.join(problems)})"
        )
    with reading(path):
        model.load_state_dict(weights)


def initial_weights(path: str | None) -> dict[str, str] | None:
    """For the manifest: the checkpoint a run starts from, and its digest (the path may be
    overwritten later; the digest says which weights it was)."""
    if path is None or not Path(path).exists():
        return None if path is None else {"path": path, "sha256": "(not found at resume)"}
    return {"path": path, "sha256": checkpoint_digest(Path(path))}
