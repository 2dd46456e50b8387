"""The run recorder: the trainer's events turned into what a run records and prints.

It owns the metrics (metrics.jsonl, TensorBoard, runtime/metrics.py) and the collective parts of
the run's events (the op counts, which involve every rank); it hands the manifest to its owner (runtime/manifest.py) and the console to
its own (runtime/console.py). Only rank 0 writes or prints. It knows the run only as plain values
(`RunIdentity`) and the trainer only through its events. A failed write is kept in the shared
`WriteFailures` for the next vote, not raised (runtime/writes.py). Checkpoints are the
checkpoint owner's (runtime/checkpoint/owner.py).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from foundation.faults import TrainingFault
from runtime.clock import seconds_since_process_start
from runtime.console import Console
from runtime.launcher_watch import launcher_gone
from runtime.manifest import RunManifest
from runtime.metrics import MetricsLogger
from runtime.process_group import ProcessGroup
from runtime.provenance import machine, state_dict_sha256
from runtime.rundir import RunDirectory
from runtime.step_trace import StepTrace, peak_memory_mb
from runtime.writes import WriteFailures
from seeding import SeedPlan
from seeding.hashseed import hash_seed_warning
from training.compile import compile_seconds
from training.determinism import DeterminismConfig, Precision, determinism_report
from training.events import Position
from training.topology import all_gather_objects


@dataclass(frozen=True)
class RunIdentity:
    """What the recorder writes about a run, resolved by train.py from the config and the CLI."""

    config_name: str
    profile: str
    seed: int
    argv: tuple[str, ...]
    resolved: dict[str, Any]  # the resolved config, as saved in config.yaml and checkpoints
    config_yaml: str
    determinism: DeterminismConfig
    hyperparameters: dict[str, Any]  # for TensorBoard's HParams tab
    epochs: int
    git: dict[str, Any] | None
    seeds: dict[str, Any]  # every rank's seed plan (`seed_table`), in the manifest and checkpoints
    world_size_invariance: dict[str, Any] | None = None  # the mode's layout, when it is on
    augmentation: dict[str, Any] | None = None  # the train and eval pipelines, as run
    data_subset: dict[str, Any] | None = None  # data.subset's draw (data/subset.py)
    init_from: dict[str, Any] | None = None  # the checkpoint a fine-tuning run started from
    resume_notes: tuple[str, ...] = ()  # a resumed run's config against the command and file
    compiles: bool = False  # trainer.compile.enabled: the compile time is reported apart
    trace_steps: int = 0  # trainer.trace_steps (runtime/step_trace.py)


class Planned(Protocol):
    """What the recorder reports of the run's plan (runtime/assembly.py's RunPlan)."""

    precision: Precision
    determinism_notes: list[str]


def seed_table(group: ProcessGroup, plan: SeedPlan, base_seed: int) -> dict[str, Any]:
    """Every rank's seed plan with its host, as the manifest and each checkpoint record it.
    A collective: every rank calls it, at the same point."""
    with group.guard("gathering the seed plans"):
        ranks = all_gather_objects(group.topology, (socket.gethostname(), plan.describe()))
    return {
        "base": base_seed,
        "strategy": plan.strategy,
        "ranks": [
            {"rank": rank, "host": host, **description}
            for rank, (host, description) in enumerate(ranks)
        ],
    }


class RunRecorder:
    def __init__(
        self,
        run_dir: RunDirectory,
        identity: RunIdentity,
        group: ProcessGroup,
        planned: Planned,
        resume_step: int | None,
        writes: WriteFailures,
    ) -> None:
        """Rank 0 must be the run directory's writer already (`claim_run_directory`): the
        metrics of a resumed run are cut back to its checkpoint here."""
        self.run_dir = run_dir
        self.identity = identity
        self.group = group
        self.precision = planned.precision
        self.determinism_notes = list(planned.determinism_notes)
        self.writes = writes
        self.first_step_at: float | None = None  # seconds since process start
        self.compiles = identity.compiles
        self.trace = StepTrace(
            run_dir.tensorboard_dir,
            identity.trace_steps if group.is_main else 0,
            group.device,
            worker=f"rank{group.rank}",
        )
        self.seeds = identity.seeds
        topology = {
            "world_size": group.world_size,
            "nodes": group.topology.nodes,
            "device": str(group.device),
            "backend": group.topology.backend,
            "machine": machine(group.device),
        }
        self.manifest = RunManifest.started(run_dir, identity, self.seeds, topology, resume_step)
        self.console = Console(group.is_main, identity.epochs)
        self.resumed = resume_step is not None
        self._preview: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None
        self.logger = MetricsLogger(run_dir, enabled=group.is_main, resume_step=resume_step)
        if group.is_main and (warning := hash_seed_warning()):
            self.determinism_notes.append(warning)
            self.console.warn(warning)

    def checkpoint_provenance(self) -> dict[str, Any]:
        """What every checkpoint records beside the state: the seeds, the resolved config and
        the library versions."""
        return {
            "seeds": self.seeds,
            "config": self.identity.resolved,
            "versions": self.manifest.versions,
        }

    def flush_logs(self) -> None:
        """Before a checkpoint: metrics.jsonl rows are on disk as they are logged, TensorBoard's
        are queued in memory; a resume from the checkpoint must find both up to its step."""
        self.logger.flush()

    def say(self, message: str) -> None:
        self.console.say(message)

    # ----------------------------------------------------------------- start
    def show_augmentation(self, preview: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> None:
        """At the start: a fresh run's first training batch as the model sees it, and the same
        images through the evaluation pipeline, in TensorBoard (rank 0; a resumed run has them
        already)."""
        self._preview = preview

    def _write_augmentation_preview(self) -> None:
        if self._preview is None or not self.group.is_main or self.resumed:
            return
        preview, self._preview = self._preview, None
        started = time.perf_counter()
        augmented, plain = preview()
        self.logger.images("augmentation/train_batch_augmented", augmented)
        self.logger.images("augmentation/train_batch_unaugmented", plain)
        self.logger.flush()
        seconds = time.perf_counter() - started
        self.manifest.note(augmentation_preview_s=round(seconds, 3))
        self.say(
            f"augmentation: the first training batch, augmented and not, in TensorBoard's "
            f"Images tab (make tensorboard LOGDIR={self.run_dir.tensorboard_dir}; {seconds:.2f} s)"
        )

    def start(self, position: Position) -> None:
        report = self._determinism({})
        if self.group.is_main:
            self.manifest.write_start(report)
        else:
            self.manifest.note(determinism=report)
        where = f"{self.group.world_size} process(es) on {self.group.topology.nodes} node(s), "
        where += f"{self.group.device}"
        if position.step:
            at = resumed_at(position, self.identity.epochs)
            where += f", resuming after step {position.step} ({at})"
        self.console.started(self.run_dir.path, self.identity, where, report["verdict"])
        self._write_augmentation_preview()
        self.trace.begin()

    # ----------------------------------------------------------------- events (TrainingEvents)
    def step_finished(self, position: Position, batches_per_epoch: int, samples: int) -> None:
        if self.first_step_at is None:
            self.first_step_at = round(seconds_since_process_start(), 3)
            if self.compiles:
                self.console.say(f"compiled the training step in {compile_seconds():.1f}s")
        self.trace.step()
        self.console.step(position, batches_per_epoch, samples)

    def step_logged(self, position: Position, values: dict[str, float]) -> None:
        with self.writes.guarded(self.run_dir.metrics_file):
            self.logger.log("step", position.step, values, epoch=position.epoch)
        memory = peak_memory_mb(self.group.device)
        self.logger.log_measure("memory/peak_mb", memory, position.step)

    def epoch_finished(self, position: Position, metrics: dict[str, float]) -> None:
        with self.writes.guarded(self.run_dir.metrics_file):
            self.logger.log("epoch", position.step, metrics, epoch=position.epoch)
        self.console.epoch(position, metrics)

    # ----------------------------------------------------------------- a fault
    def record_fault(
        self, position: Position, fault: TrainingFault, resume_from: Path | None
    ) -> None:
        """The rank that reports the fault writes the manifest: what happened, and where to
        continue from. Nothing else is written: no checkpoint, no final metrics."""
        self.trace.end()
        if self.group.rank != fault.reporting_rank or launcher_gone():
            return  # an orphan writes nothing more (runtime/launcher_watch.py)
        try:
            self.manifest.write_fault(position, fault, resume_from)
        except OSError as error:
            fault.add_hint(f"the manifest could not be updated either ({error.strerror})")
        with contextlib.suppress(OSError):
            self.logger.close()

    # ----------------------------------------------------------------- end
    def finish(
        self,
        position: Position,
        weights: dict[str, torch.Tensor],
        ema_weights: dict[str, torch.Tensor] | None,
        final_metrics: dict[str, float],
        op_counts: dict[str, int],
    ) -> None:
        """Collective (op counts are gathered); rank 0 writes the manifest and prints the end."""
        self.trace.end()
        report = self._determinism(self._gathered(op_counts))
        if not self.group.is_main:
            return
        self.manifest.write_completed(
            position,
            final_metrics,
            state_dict_sha256(weights),
            None if ema_weights is None else state_dict_sha256(ema_weights),
            report,
            {"time_to_first_step_s": self.first_step_at, "compile_s": self.compile_s},
        )
        if self.compile_s is not None:
            self.logger.log_measure("time/compile_s", self.compile_s, position.step)
        hyperparameters = {**self.identity.hyperparameters, "world_size": self.group.world_size}
        self.logger.log_hparams(hyperparameters, final_metrics)
        wall_time_s = self.manifest.content["wall_time_s"]
        self.console.finished(
            self.run_dir.path,
            position,
            final_metrics,
            wall_time_s,
            report["verdict"],
            self.compile_s,
        )
        self.logger.close()

    @property
    def compile_s(self) -> float | None:
        """Seconds this process spent compiling (recompiles for a new batch shape included), or
        None for an eager run."""
        return round(compile_seconds(), 3) if self.compiles else None

    def _gathered(self, op_counts: dict[str, int]) -> dict[str, int]:
        total: Counter[str] = Counter()
        with self.group.guard("gathering the nondeterministic-op counts"):
            gathered = all_gather_objects(self.group.topology, dict(op_counts))
        for counts in gathered:
            total.update(counts)
        return dict(total)

    def _determinism(self, ops: dict[str, int]) -> dict[str, Any]:
        return determinism_report(
            self.identity.profile,
            self.identity.determinism,
            self.group.device,
            self.determinism_notes,
            ops,
            self.precision,
        )


def resumed_at(position: Position, epochs: int) -> str:
    """Where a resumed run stands, counting epochs as the training log does (`epoch 1/2`)."""
    epoch = f"epoch {position.epoch_number}/{epochs}"
    if position.batch_in_epoch:
        return f"{epoch}, {position.batch_in_epoch} steps into it"
    return f"the end of {epoch}"
