"""The run recorder: everything a run writes and prints, driven by the trainer's events.

It writes config.yaml, manifest.json, determinism.json, metrics (metrics.jsonl, TensorBoard) and
the progress and epoch lines, all through `runtime.rundir` (checkpoints are the checkpoint
owner's, runtime/checkpoints.py). Only rank 0 writes or prints; the collective parts (gathering
the seed plans, the op counts) involve every rank. It knows the run only as plain values
(`RunIdentity`) and the trainer only through its events. A failed write is kept in the shared
`WriteFailures` for the next vote, not raised (runtime/writes.py).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from foundation.faults import Interrupted, TrainingFault
from runtime.clock import seconds_since_process_start
from runtime.metrics import MetricsLogger
from runtime.process_group import ProcessGroup
from runtime.progress import ProgressLine
from runtime.provenance import (
    command_line,
    library_versions,
    now_iso,
    slurm_job,
    state_dict_sha256,
)
from runtime.rundir import RunDirectory
from runtime.writes import WriteFailures
from seeding import SeedPlan
from seeding.hashseed import hash_seed_warning
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
    world_size_invariance: dict[str, Any] | None = None  # the mode's layout, when it is on
    augmentation: dict[str, Any] | None = None  # the train and eval pipelines, as run


class RunRecorder:
    def __init__(
        self,
        run_dir: RunDirectory,
        identity: RunIdentity,
        group: ProcessGroup,
        plan: SeedPlan,
        precision: Precision,
        determinism_notes: list[str],
        resume_step: int | None,
        writes: WriteFailures,
    ) -> None:
        self.run_dir = run_dir
        self.identity = identity
        self.group = group
        self.precision = precision
        self.determinism_notes = list(determinism_notes)
        self.writes = writes
        self.first_step_at: float | None = None  # seconds since process start
        self.seeds = {
            "base": identity.seed,
            "strategy": plan.strategy,
            "ranks": [
                {"rank": rank, "host": host, **description}
                for rank, (host, description) in enumerate(self._gather_plans(group, plan))
            ],
        }
        self.manifest: dict[str, Any] = {
            "status": "running",
            "command_line": command_line(),
            "arguments": list(identity.argv),
            "config_name": identity.config_name,
            "profile": identity.profile,
            "seed": identity.seed,
            "seeds": self.seeds,
            "world_size": group.world_size,
            "nodes": group.topology.nodes,
            "device": str(group.device),
            "backend": group.topology.backend,
            "versions": library_versions(),
            "git": identity.git if group.is_main else None,
            "slurm": slurm_job(),
            "start_time": now_iso(),
            "end_time": None,
            "resumed_from_step": resume_step,
            "world_size_invariance": identity.world_size_invariance,
            "augmentation": identity.augmentation,
            "final_metrics": None,
            "final_weights_sha256": None,
        }
        self.resumed = resume_step is not None
        self._preview: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None
        self.logger = MetricsLogger(run_dir, enabled=group.is_main, resume_step=resume_step)
        self.progress = ProgressLine(sys.stdout, identity.epochs) if group.is_main else None
        if group.is_main:
            run_dir.create()
            run_dir.write_config(identity.config_yaml)
            warning = hash_seed_warning()
            if warning:
                self.determinism_notes.append(warning)
                print(f"warning: {warning}", file=sys.stderr)

    @staticmethod
    def _gather_plans(group: ProcessGroup, plan: SeedPlan) -> list[Any]:
        with group.guard("gathering the seed plans"):
            return all_gather_objects(group.topology, (socket.gethostname(), plan.describe()))

    def checkpoint_provenance(self) -> dict[str, Any]:
        """What every checkpoint records beside the state: the seeds, the resolved config and
        the library versions."""
        return {
            "seeds": self.seeds,
            "config": self.identity.resolved,
            "versions": self.manifest["versions"],
        }

    def flush_logs(self) -> None:
        """Before a checkpoint: metrics.jsonl rows are on disk as they are logged, TensorBoard's
        are queued in memory; a resume from the checkpoint must find both up to its step."""
        self.logger.flush()

    def say(self, message: str) -> None:
        if self.group.is_main:
            if self.progress is not None:
                self.progress.clear()
            print(message, flush=True)

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
        self.manifest["augmentation_preview_s"] = round(seconds, 3)
        self.say(
            f"augmentation: the first training batch, augmented and not, in TensorBoard's "
            f"Images tab (tensorboard --logdir {self.run_dir.tensorboard_dir}; {seconds:.2f} s)"
        )

    def start(self, position: Position) -> None:
        report = self._determinism({})
        self.manifest["determinism"] = report
        if self.group.is_main:
            self.run_dir.write_determinism(report)
            self.run_dir.write_manifest(self.manifest)
        where = (
            f", resuming at epoch {position.epoch} batch {position.batch_in_epoch} "
            f"(step {position.step})"
            if position.step
            else ""
        )
        self.say(
            f"run {self.run_dir}  seed {self.identity.seed}  profile {self.identity.profile}  "
            f"{self.group.world_size} process(es) on {self.group.topology.nodes} node(s), "
            f"{self.group.device}{where}\ndeterminism: {report['verdict']}"
        )
        self._write_augmentation_preview()

    # ----------------------------------------------------------------- events (TrainingEvents)
    def step_finished(self, position: Position, batches_per_epoch: int, samples: int) -> None:
        if self.first_step_at is None:
            self.first_step_at = round(seconds_since_process_start(), 3)
        if self.progress is not None:
            self.progress.update(position, batches_per_epoch, samples)

    def step_logged(self, position: Position, values: dict[str, float]) -> None:
        with self.writes.guarded(self.run_dir.metrics_file):
            self.logger.log("step", position.step, values, epoch=position.epoch)

    def epoch_finished(self, position: Position, metrics: dict[str, float]) -> None:
        epoch = position.epoch
        with self.writes.guarded(self.run_dir.metrics_file):
            self.logger.log("epoch", position.step, metrics, epoch=epoch)
        self.say(
            f"epoch {epoch:>3}/{self.identity.epochs}  step {position.step:>6}  "
            f"train_loss {metrics['train_loss']:.4f}  train_acc {metrics['train_acc']:.4f}  "
            f"val_loss {metrics['val_loss']:.4f}  val_acc {metrics['val_acc']:.4f}  "
            f"lr {metrics['lr']:.5f}  {metrics['samples_per_s']:,.0f} samples/s",
        )

    # ----------------------------------------------------------------- a fault
    def record_fault(
        self, position: Position, fault: TrainingFault, resume_from: Path | None
    ) -> None:
        """The rank that reports the fault writes the manifest: what happened, and where to
        continue from. Nothing else is written: no checkpoint, no final metrics."""
        if self.group.rank != fault.reporting_rank:
            return
        self.manifest.update(self.run_dir.read_manifest() or {})
        self.manifest.update(
            status="interrupted" if isinstance(fault, Interrupted) else "failed",
            fault=fault.kind,
            error=str(fault),
            end_time=now_iso(),
            wall_time_s=round(seconds_since_process_start(), 3),
            final_step=position.step,
            final_epoch=position.epoch,
            resume_from=None if resume_from is None else str(resume_from),
        )
        try:
            self.run_dir.write_manifest(self.manifest)
        except OSError as error:
            fault.add_hint(f"the manifest could not be updated either ({error.strerror})")
        with contextlib.suppress(OSError):
            self.logger.close()

    # ----------------------------------------------------------------- end
    def finish(
        self,
        position: Position,
        weights: dict[str, torch.Tensor],
        final_metrics: dict[str, float],
        op_counts: dict[str, int],
    ) -> None:
        """Collective (op counts are gathered); rank 0 writes the manifest and prints the end."""
        report = self._determinism(self._gathered(op_counts))
        if not self.group.is_main:
            return
        self.manifest.update(
            status="completed",
            error=None,
            end_time=now_iso(),
            wall_time_s=round(seconds_since_process_start(), 3),
            time_to_first_step_s=self.first_step_at,
            final_step=position.step,
            final_epoch=position.epoch,
            final_metrics=final_metrics,
            final_weights_sha256=state_dict_sha256(weights),
            determinism=report,
        )
        self.run_dir.write_determinism(report)
        self.run_dir.write_manifest(self.manifest)
        hyperparameters = {**self.identity.hyperparameters, "world_size": self.group.world_size}
        self.logger.log_hparams(hyperparameters, final_metrics)
        self.say(
            f"done: val_acc {final_metrics['val_acc']:.4f}  "
            f"val_loss {final_metrics['val_loss']:.4f}  step {position.step}  "
            f"{self.manifest['wall_time_s']:.1f}s\n"
            f"determinism: {report['verdict']}\noutputs: {self.run_dir}"
        )
        self.logger.close()

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
